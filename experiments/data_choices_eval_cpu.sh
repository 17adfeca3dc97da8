#!/usr/bin/env bash
# Issue 16's evaluation and report, after experiments/data_choices_cpu.sh (and comparators_cpu.sh
# for the triplet runs): STS-B test per dim with intervals (each run's own test_pairs.npz) and
# BEIR SciFact test nDCG@10 per dim (eval.py: each group's lowest seed found, and the backbone).
# -> experiments/results/data_choices_cpu/ (report.md, report.png, scifact.md)
# Time: ~3 min per SciFact evaluation on one CPU thread. Usage: bash experiments/data_choices_eval_cpu.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}
n=${1:-4000}
tag=$([[ $n == 4000 ]] || echo "_n$n")   # the 4,000-row study keeps its folder; other sizes get their own
study=experiments/results/data_choices_cpu$tag
pick() {  # seed kind: the finished run folder of the triplets / mined_k1 / mined_k3 run
    local seed=$1 root="outputs/runs/allnli_mrl/seed$1" head="data.batch_size=32,data.max_seq_length=64,data.max_train_samples=$n"
    [[ -d $root ]] || return 0   # no run of that seed on this machine
    case $2 in
        triplets) ls "$root" | grep -E "^$head,eval.score_untrained=(true|false),model=minilm_l6,optim.lr=2e-5\$" \
                      | sed "s|^|$root/|" | head -1 || true ;;  # none when the triplet runs are committed copies
        mined_k1) find "$root" -path "$root/$head,data.train.columns=\[anchor,positive,negative_1\],data.train.local_file=mined/*" \
                      -name results.json -printf '%h\n' | head -1 ;;
        mined_k3) find "$root" -path "$root/$head,*negative_3\],data.train.local_file=mined/*" -name results.json \
                      -printf '%h\n' | head -1 ;;
    esac
}
copy() {  # group seed folder
    [[ -n $3 ]] || return 0
    mkdir -p "$study/$1/seed$2"
    cp "$3/results.json" "$3/test_pairs.npz" "$study/$1/seed$2/"
}
declare -A model seed_of
for seed in 42 43 44; do
    for kind in triplets mined_k1 mined_k3; do
        folder=$(pick $seed $kind)
        copy $kind $seed "$folder"
        [[ -n $folder && -z ${model[$kind]:-} ]] && model[$kind]=$folder seed_of[$kind]=$seed
    done
done
# the triplet arm is the comparators study's MRL runs: its committed copies stand in for the
# seeds whose run folders an earlier session's machine held
committed=experiments/results/comparators_cpu$tag/mrl
for seed in 42 43 44; do
    [[ -f $study/triplets/seed$seed/results.json || ! -f $committed/seed$seed/results.json ]] \
        || copy triplets $seed "$committed/seed$seed"
done
mixture=$(ls -d outputs/runs/mixture_mrl/seed42/*max_train_samples=$n,* 2>/dev/null | head -1 || true)
copy mixture 42 "$mixture"
[[ -n $mixture ]] && model[mixture]=$mixture seed_of[mixture]=42
model[untrained]=sentence-transformers/all-MiniLM-L6-v2 seed_of[untrained]=-
python experiments/strip_gold.py "$study"   # no copy of the benchmark scores in the commit
python -m mrl.report "$study" --group-by folder --reference triplets
# SciFact: each group's lowest seed on this machine, its table kept in $study/scifact/<group>.md,
# so a later session (whose outputs/ lacks that model) still reports it
mkdir -p "$study/scifact"
for group in untrained triplets mined_k1 mined_k3 mixture; do
    kept=$study/scifact/$group.md
    [[ -f $kept || -z ${model[$group]:-} ]] && continue
    dir=outputs/evals_data_choices$tag/$group
    [[ -f $dir/results.json ]] || python eval.py model="'${model[$group]}'" benchmarks=scifact \
        max_seq_length=64 hydra.run.dir="$dir" > /dev/null
    { echo "## $group (seed ${seed_of[$group]})"; echo; cat "$dir/benchmarks.md"; } > "$kept"
done
{
    echo "# BEIR SciFact test (300 queries, 5,183 documents), one seed per group, eval.py benchmarks=scifact"
    for group in untrained triplets mined_k1 mined_k3 mixture; do
        [[ -f $study/scifact/$group.md ]] && { echo; cat "$study/scifact/$group.md"; }
    done
} > "$study/scifact.md"
echo "data evaluation done"

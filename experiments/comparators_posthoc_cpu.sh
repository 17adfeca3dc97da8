#!/usr/bin/env bash
# Issue 13's study, part 2: post-hoc comparators on part 1's models (experiments/comparators_cpu.sh),
# every model scored on STS-B test with eval.py, then one report with intervals.
#   baseline + PCA, baseline + random rotation (the null control), baseline + Matryoshka adaptor
#   (linear, trained with the Matryoshka loss on frozen embeddings), MRL + PCA: each fitted on
#   the first 4,000 training triplets (~6,000 distinct texts; the models of the 4,000-row study
#   trained on exactly these, the full-size ones on them and 24,142 more; never a test split),
#   per seed of the models found on this machine;
#   sentence-transformers' peer models (seed 42) and the untrained backbone, as they are.
# Then every results.json + test_pairs.npz is copied into experiments/results/comparators_cpu/
# <group>/<seed>/ and reported with `python -m mrl.report ... --group-by folder`.
# Time: ~1-2 min per evaluation on the 2-core CPU (~2 min a map at one thread beside a training run, 2026-12-02).
# Usage: bash experiments/comparators_posthoc_cpu.sh [N] [collect]: `collect` only copies the
# training runs found into the study folder (gold stripped), so a later session, whose outputs/
# no longer holds them, adds its runs to the same folder and reports them all.
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}
n=${1:-4000} part=${2:-all}
[[ $part == all || $part == collect ]] || { echo "error: the second argument is all or collect, not '$part'." >&2; exit 2; }
tag=$([[ $n == 4000 ]] || echo "_n$n")   # the 4,000-row study keeps its folder; other sizes get their own
study=experiments/results/comparators_cpu$tag
work=outputs/comparators_posthoc/n$n
run_of() {  # exp seed [overrides after eval.score_untrained, default: the plain recipe]
    local name
    name=$(ls "outputs/runs/$1/seed$2" 2>/dev/null | grep -E "^data.batch_size=32,data.max_seq_length=64,data.max_train_samples=$n,eval.score_untrained=(true|false),${3:-model=minilm_l6,optim.lr=2e-5}\$" | head -1)
    [[ -n $name && -f outputs/runs/$1/seed$2/$name/results.json ]] && echo "outputs/runs/$1/seed$2/$name"
    return 0
}
score() {  # group seed model [eval.py overrides...]
    local group=$1 seed=$2 model=$3; shift 3
    local dir=$work/$group/seed$seed
    [[ -f $dir/results.json ]] || python eval.py model="'$model'" benchmarks=stsb max_seq_length=64 \
        transform_fit.max_samples=4000 hydra.run.dir="$dir" "$@"
    collect "$group" "$seed" "$dir"
}
collect() {  # group seed folder: copy what the report reads
    mkdir -p "$study/$1/seed$2"
    cp "$3/results.json" "$3/test_pairs.npz" "$study/$1/seed$2/"
}
for seed in 42 43 44; do
    mrl=$(run_of allnli_mrl $seed) base=$(run_of allnli_baseline $seed)
    [[ -n $mrl ]] && collect mrl $seed "$mrl"
    [[ -n $base ]] && collect baseline $seed "$base"
    for d in 32 64 128; do
        fixed=$(run_of allnli_fixed_dim $seed "matryoshka.fixed_dim=$d,model=minilm_l6,optim.lr=2e-5")
        [[ -n $fixed ]] && collect "fixed_dim=$d" $seed "$fixed"
    done
    [[ $part == collect ]] && continue
    if [[ -n $base ]]; then
        score baseline+pca $seed "$base" transform=pca
        score baseline+rotation $seed "$base" transform=rotation transform_fit.seed=$seed
        score baseline+adaptor $seed "$base" transform=adaptor transform_fit.seed=$seed
    fi
    [[ -n $mrl ]] && score mrl+pca $seed "$mrl" transform=pca
done
if [[ $part == collect ]]; then
    python experiments/strip_gold.py $study
    echo "collected"; exit 0
fi
for loss in matryoshka mnrl; do
    peer=outputs/st_peer/n$n/$loss-s42
    [[ -f $peer/peer.json ]] && score "st_$loss" 42 "$peer"
done
score untrained 0 sentence-transformers/all-MiniLM-L6-v2
python experiments/strip_gold.py $study   # no copy of the benchmark scores in the commit
python -m mrl.report "$study" --group-by folder --reference baseline

#!/usr/bin/env bash
# The full-size runs of the studies of issues 13, 15, 16 and 17 (the whole shared triplet file,
# N=28142 rows, 879 steps of 32), in the order that completes one study after another, in two
# lanes of one CPU thread each (each lane 1.6-2.7 s per step, 33-40 min per run, measured with
# both lanes running; together more throughput than one two-thread job, 0.82 s per step, with
# fewer waits between lanes). Each run is exactly the command of its study script
# (comparators_cpu.sh, axes_cpu.sh), so the study scripts and their evaluation scripts find it,
# and a finished run is skipped, a killed one resumes from its last checkpoint.
#   lane 1: mining for issue 16, fixed-dim 32 (seed 44), issue 16's seed-42 runs (mined k=1,
#           k=3) and its mixture run
#   lane 2: sentence-transformers' peers (MNRL, MatryoshkaLoss; seed 42), issue 16's seed-43 runs
#           then `bash experiments/comparators_posthoc_cpu.sh 28142` (the peers' scores, the
#           report); once both lanes are done, `bash experiments/data_choices_eval_cpu.sh 28142`
#           (issue 16's report and SciFact) and `comparators_posthoc_cpu.sh 28142` again.
#   A comparators run whose copy is committed in experiments/results/comparators_cpu_n28142/ is
#   skipped (`study`), so the list names the whole study and each session trains what is left.
#   (the sessions before trained MRL, QAT, the baseline, the fixed-dim runs and the 2D runs.)
# The run folders (outputs/) do not outlive a session's machine, so the lanes finish one study's
# models and its evaluations together; what the studies' reports read (results.json and
# test_pairs.npz of each run, gold stripped) is copied into experiments/results/ and committed,
# and a later session adds the remaining seeds and sizes to the same folders.
#   lane 2d: issue 15's 2D runs (seeds 42, 43) and sentence-transformers' Matryoshka2dLoss peer,
#           which the 2D study (experiments/results/matryoshka_2d_cpu.md) took from the lanes of
#           the session before; its MRL and baseline runs are lanes 1 and 2's.
# A lane started while a run of its list is still training elsewhere waits for it.
# Usage: bash experiments/full_size_cpu.sh 1 & bash experiments/full_size_cpu.sh 2 &
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
lane=${1:?usage: full_size_cpu.sh LANE (1, 2 or 2d)}
n=28142
common=(model=minilm_l6 trainer=cpu logger=csv callbacks.progress_bar=none
        data.batch_size=32 data.max_seq_length=64 data.max_train_samples=$n optim.lr=2e-5)
train() {  # exp seed score_untrained [overrides...]: one run, skipped when finished
    local exp=$1 seed=$2 untrained=$3; shift 3
    local start; start=$(date +%s)
    local want="train.py +exp=$exp seed=$seed ${common[*]} eval.score_untrained=$untrained${*:+ $*}"
    while busy "$want"; do sleep 30; done   # the same run training in another process
    python train.py +exp="$exp" seed="$seed" "${common[@]}" eval.score_untrained="$untrained" "$@"
    echo "lane $lane: $exp seed=$seed $*: $(( $(date +%s) - start )) s"
}
finished() {  # exp seed overrides-after-score_untrained: is that run's results.json there?
    local flag
    for flag in true false; do
        [[ -f outputs/runs/$1/seed$2/data.batch_size=32,data.max_seq_length=64,data.max_train_samples=$n,eval.score_untrained=$flag,$3/results.json ]] && return 0
    done
    return 1
}
busy() {  # command: is a process with that command line (after the interpreter) running?
    local line
    while read -r line; do [[ $line == *"$1" ]] && return 0; done < <(ps -eo args=)
    return 1
}
wait_for() {  # exp seed overrides: poll until the other lane has finished that run
    until finished "$@"; do sleep 30; done
}
plain=model=minilm_l6,optim.lr=2e-5
study() {  # group exp seed [overrides...]: a comparators run, skipped when its copy is committed
    local group=$1; shift
    [[ -f experiments/results/comparators_cpu_n$n/$group/seed$2/results.json ]] && return 0
    train "$1" "$2" false "${@:3}"
}
twod=(matryoshka.layers=all matryoshka.layer_weighting=by_depth)
peer() {  # loss seed: sentence-transformers' trainer on the same setup (skipped when committed)
    local out=outputs/st_peer/n$n/$1-s$2
    [[ -f experiments/results/comparators_cpu_n$n/st_$1/seed$2/results.json ]] && return 0
    [[ -f $out/peer.json ]] || python benchmarks/train_st_peer.py --loss "$1" --seed "$2" \
        --triplets "$n" --out "$out"
}
if [[ $lane == 2d ]]; then
    train allnli_mrl 42 false "${twod[@]}"
    train allnli_mrl 43 false "${twod[@]}"
    peer matryoshka2d 42
elif [[ $lane == 1 ]]; then
    bash experiments/data_choices_cpu.sh $n mine
    for d in 64 32 128; do study fixed_dim=$d allnli_fixed_dim 42 matryoshka.fixed_dim=$d; done
    for seed in 43 44; do
        for d in 64 32; do study fixed_dim=$d allnli_fixed_dim $seed matryoshka.fixed_dim=$d; done
    done
    bash experiments/data_choices_cpu.sh $n 42
    bash experiments/data_choices_cpu.sh $n mixture
else
    peer mnrl 42
    peer matryoshka 42
    bash experiments/data_choices_cpu.sh $n 43
    bash experiments/comparators_posthoc_cpu.sh $n
fi
echo "lane $lane done"

#!/usr/bin/env bash
# Issue 13's study, part 1 (training): what nesting costs and what the peer gets.
# all-MiniLM-L6-v2 on the first N shared NLI triplets (N=4000 by default: 125 steps of 32), 1 epoch,
# batch 32, 64 tokens, lr 2e-5, 10 % warm-up: MRL and the baseline (seeds 42-44), models trained
# for one size alone at 32 and 64 (seeds 42-44) and 128 (seed 42), and sentence-transformers'
# own trainer with MatryoshkaLoss(MNRL) and with plain MNRL (seed 42, benchmarks/train_st_peer.py).
# Seed 42 of everything runs first, so a cut-short study still has every comparator once.
# Part 2 (post-hoc PCA / rotation / adaptor, and the report): experiments/comparators_posthoc_cpu.sh.
# Time: ~6-10 min per run on the 2-core CPU (one thread each when another job shares the cores);
# 15 runs. A finished run is skipped on a re-run (its results.json exists).
# Usage: bash experiments/comparators_cpu.sh [N_TRIPLETS]   (28142 = the whole shared file)
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}
n=${1:-4000}
common=(model=minilm_l6 trainer=cpu logger=csv callbacks.progress_bar=none
        data.batch_size=32 data.max_seq_length=64 data.max_train_samples=$n optim.lr=2e-5)
ours() {  # exp seed [overrides...]
    local exp=$1 seed=$2; shift 2
    local untrained=false
    [[ $exp == allnli_mrl && $seed == 42 ]] && untrained=true  # the backbone's scores, once
    local start; start=$(date +%s)
    python train.py +exp="$exp" seed="$seed" "${common[@]}" eval.score_untrained=$untrained "$@"
    echo "$exp seed=$seed $*: $(( $(date +%s) - start )) s"
}
peer() {  # loss seed
    local out=outputs/st_peer/n$n/$1-s$2
    if [[ -f $out/peer.json ]]; then echo "$out done"; return; fi
    python benchmarks/train_st_peer.py --loss "$1" --seed "$2" --triplets "$n" --out "$out"
}
ours allnli_mrl 42
ours allnli_baseline 42
ours allnli_fixed_dim 42 matryoshka.fixed_dim=64
ours allnli_fixed_dim 42 matryoshka.fixed_dim=32
ours allnli_fixed_dim 42 matryoshka.fixed_dim=128
peer matryoshka 42
peer mnrl 42
for seed in 43 44; do
    ours allnli_mrl $seed
    ours allnli_baseline $seed
    ours allnli_fixed_dim $seed matryoshka.fixed_dim=64
    ours allnli_fixed_dim $seed matryoshka.fixed_dim=32
done
echo "all training runs done"

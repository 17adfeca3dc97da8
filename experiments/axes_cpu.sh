#!/usr/bin/env bash
# Issues 15 and 17, training: 2D Matryoshka (all 6 layers of MiniLM-L6 x the dim schedule,
# layers weighted by depth) and quantization-aware MRL (qat=binary: binary codes at 256/128/64/32
# dims; qat=int8_binary: the same plus int8 at 64/32), seeds 42 and 43, on the setup of
# experiments/comparators_cpu.sh (first N shared NLI triplets, batch 32, 64 tokens, lr 2e-5,
# 1 epoch), whose MRL and baseline runs they are compared with.
# Time: ~4-6 min per run on one CPU thread (6 runs). A finished run is skipped on a re-run.
# Usage: bash experiments/axes_cpu.sh [N_TRIPLETS]
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}
n=${1:-4000}
common=(model=minilm_l6 trainer=cpu logger=csv callbacks.progress_bar=none
        data.batch_size=32 data.max_seq_length=64 data.max_train_samples=$n optim.lr=2e-5
        eval.score_untrained=false)
run() {  # exp seed [overrides...]
    local exp=$1 seed=$2; shift 2
    local start; start=$(date +%s)
    python train.py +exp="$exp" seed="$seed" "${common[@]}" "$@"
    echo "$exp seed=$seed $*: $(( $(date +%s) - start )) s"
}
for seed in 42 43; do
    run allnli_mrl $seed matryoshka.layers=all matryoshka.layer_weighting=by_depth
    run allnli_mrl $seed qat=binary
    run allnli_mrl $seed qat=int8_binary
done
echo "all axis runs done"

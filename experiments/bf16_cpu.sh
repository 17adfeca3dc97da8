#!/usr/bin/env bash
# Issue 30's study: does bf16 change what MRL learns? all-MiniLM-L6-v2, MRL (MNRL at
# 384/256/128/64/32, weight 1), one epoch of all 28,142 shared triplets (879 steps of 32), 64
# tokens, lr 2e-5, 10 % warm-up: the comparators' full-epoch recipe, in fp32 (trainer=cpu) and in
# bf16 autocast (trainer.precision=bf16-emulated: this machine's CPU has no bf16 units, so bf16's
# numerics run with fp32 matrix kernels; src/mrl/run/precision.py), seeds 42 and 43 each, in the
# same session on the same machine. STS-B test is scored at the end of each run (under the run's
# precision); experiments/bf16_eval_cpu.sh then scores STS-B and SciFact with eval.py in fp32.
# Time: ~20 min per run on the 2-core CPU when nothing else runs. A finished run is skipped.
# Usage: bash experiments/bf16_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}
export HF_HUB_OFFLINE=1
root=outputs/bf16_study
common=(+exp=allnli_mrl model=minilm_l6 trainer=cpu logger=csv callbacks.progress_bar=none
        data.batch_size=32 data.max_seq_length=64 data.max_train_samples=28142 optim.lr=2e-5)
train() {  # name seed [overrides...]
    local name=$1 seed=$2; shift 2
    local dir=$root/$name/seed$seed
    [[ -f $dir/results.json ]] && { echo "$dir done"; return; }
    local start; start=$(date +%s)
    python train.py "${common[@]}" seed="$seed" "hydra.run.dir=$dir" "$@"
    echo "$name seed=$seed: $(( $(date +%s) - start )) s"
}
# bf16 first: its two seeds against the committed fp32 seeds are the study's core; the fp32
# re-runs give SciFact (the committed fp32 models were not kept) and a same-session reference.
train bf16 42 trainer.precision=bf16-emulated
train bf16 43 trainer.precision=bf16-emulated
train fp32 42
train fp32 43
echo "all training runs done"

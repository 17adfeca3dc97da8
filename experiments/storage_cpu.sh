#!/usr/bin/env bash
# Issue 31's study, part 1 (training): the models of the storage-axis study.
# all-MiniLM-L6-v2, one epoch of all 28,142 shared triplets (879 steps of 32), 64 tokens, lr 2e-5,
# 10 % warm-up (the comparators' full-epoch recipe): the baseline (MNRL at full width) seeds 42
# and 43 here; the MRL models are the fp32 runs of issue 30's study (experiments/bf16_cpu.sh:
# outputs/bf16_study/fp32/seed42, seed43), the same recipe with +exp=allnli_mrl.
# Part 2 (every representation scored against bytes, and the report):
# experiments/storage_eval_cpu.sh.
# Time: 1,114 s for seed 43 on the 2-core CPU when nothing else ran (2026-12-07). A finished run
# is skipped.
# Usage: bash experiments/storage_cpu.sh [SEED ...]   (default: 42 43)
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}
export HF_HUB_OFFLINE=1
root=outputs/storage_study
common=(+exp=allnli_baseline model=minilm_l6 trainer=cpu logger=csv callbacks.progress_bar=none
        data.batch_size=32 data.max_seq_length=64 data.max_train_samples=28142 optim.lr=2e-5)
for seed in "${@:-42 43}"; do
    for s in $seed; do
        dir=$root/baseline/seed$s
        if [[ -f $dir/results.json ]]; then echo "$dir done"; continue; fi
        start=$(date +%s)
        python train.py "${common[@]}" seed="$s" "hydra.run.dir=$dir"
        echo "baseline seed=$s: $(( $(date +%s) - start )) s"
    done
done
echo "storage study: training done"

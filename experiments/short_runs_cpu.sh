#!/usr/bin/env bash
# A short MRL run and its regular baseline, all-MiniLM-L6-v2 on the first 8,000 shared NLI
# triplets (batch 32, 64 tokens, 1 epoch = 250 steps), for the retrieval tables of
# experiments/results/retrieval_beir_cpu.md. Not the quick-start runs: fewer rows and steps.
# Time: ~10-15 min per run on 2 cores (measured times in the results file).
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}
common=(model=minilm_l6 trainer=cpu logger=csv callbacks.progress_bar=none
        data.batch_size=32 data.max_seq_length=64 data.max_train_samples=8000)
for exp in allnli_mrl allnli_baseline; do
    start=$(date +%s)
    python train.py +exp=$exp "${common[@]}"
    echo "$exp: $(( $(date +%s) - start )) s"
done

#!/usr/bin/env bash
# MRL vs. regular baseline, all-MiniLM-L6-v2 on the 28,142 shared NLI triplets, 1 epoch each,
# on a 2-core CPU, offline. Reaches: see experiments/results/allnli_minilm_cpu.md.
# Time: ~15 min per run on 2 idle cores (221 steps of 128 triplets + STS-B dev/test; 920 s
# measured 2026-12-07 with the unpadded forward, ~35-40 min with the code of the committed runs).
# The committed results were made with model.chunk_size=64 (the default then; now `auto`,
# 16 texts per call on CPU): add that override to draw the same dropout masks as they did.
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}

python train.py +exp=allnli_mrl model=minilm_l6 trainer=cpu callbacks.progress_bar=tqdm
python train.py +exp=allnli_baseline model=minilm_l6 trainer=cpu callbacks.progress_bar=tqdm \
    "eval.compare_to='outputs/runs/allnli_mrl/seed42/model=minilm_l6'"
# the report over all seeds of the study (this seed and allnli_minilm_cpu_seeds.sh):
study=experiments/results/allnli_minilm_cpu_study
for exp in allnli_mrl allnli_baseline; do
    mkdir -p "$study/$exp/seed42" && cp "outputs/runs/$exp/seed42/model=minilm_l6/results.json" "$study/$exp/seed42/"
done
python -m mrl.report "$study"

#!/usr/bin/env bash
# The weighting ablation of the MiniLM study: MRL with weights increasing toward small dims
# (matryoshka.weights=increasing: 1 + log2(384/dim) scaled to mean 1 -> 0.3748/0.5941/0.9689/
# 1.3437/1.7185 at 384/256/128/64/32) against uniform MRL and the baseline, seed 42, 1 epoch.
# Question: does putting more weight on the small prefixes buy small-dim quality, and at what
# cost at full width?
# Time: ~40 min on 2 cores.
# The committed run was made with the study's code (commit 6c7a430, 28,142 triplets, before
# exact duplicates were dropped and before named weightings existed), with the same weights
# as the explicit list matryoshka.weights=[0.3748,0.5941,0.9689,1.3437,1.7185].
# The committed results were made with model.chunk_size=64 (the default then; now `auto`,
# 16 texts per call on CPU): add that override to draw the same dropout masks as they did.
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}

python train.py +exp=allnli_mrl model=minilm_l6 trainer=cpu seed=42 matryoshka.weights=increasing
study=experiments/results/allnli_minilm_cpu_study
mkdir -p "$study/allnli_mrl_weights_increasing/seed42"
cp "outputs/runs/allnli_mrl/seed42/matryoshka.weights=increasing,model=minilm_l6/results.json" \
    "$study/allnli_mrl_weights_increasing/seed42/"
python -m mrl.report "$study"

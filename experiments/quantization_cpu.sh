#!/usr/bin/env bash
# Truncation x quantization of the seed-42 MRL and baseline MiniLM runs (exported by
# use_embeddings_cpu.sh): STS-B test Spearman vs bytes for float32/float16/int8/binary.
# Time: ~5 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}
python -m mrl.quantization "outputs/runs/allnli_mrl/seed42/model=minilm_l6" \
    "outputs/runs/allnli_baseline/seed42/model=minilm_l6" --name MRL baseline \
    --out experiments/results/evals/quantization

#!/usr/bin/env bash
# all-MiniLM-L6-v2 as shipped (no training of ours) on BEIR SciFact test at every dim with
# eval.py: nDCG@10, MRR@10, recall@100 and MAP@100 at its eval dims 384/256/128/64/32, from one
# encode of the 300 test queries and 5,183 documents (exact FAISS search per prefix).
# Results: experiments/results/retrieval_beir_cpu.md. Time: ~10 min on 2 cores (the encode).
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}
export HF_HUB_OFFLINE=1
python eval.py model=sentence-transformers/all-MiniLM-L6-v2 benchmarks=scifact device=cpu "$@"

# The short MRL run and its baseline (experiments/short_runs_cpu.sh), on the same set at 256 tokens:
for exp in allnli_mrl allnli_baseline; do
    python eval.py "model='outputs/runs/$exp/seed42/data.batch_size=32,data.max_seq_length=64,data.max_train_samples=8000,model=minilm_l6'" \
        benchmarks=scifact max_seq_length=256
done

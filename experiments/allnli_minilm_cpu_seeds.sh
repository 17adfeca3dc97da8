#!/usr/bin/env bash
# Seeds 43 and 44 of the MRL-vs-baseline study (seed 42: allnli_minilm_cpu.sh), same recipe:
# all-MiniLM-L6-v2, 28,142 shared NLI triplets, 1 epoch (221 steps of 128), 2-core CPU, offline.
# Question: is MRL's gain at small dims larger than the seed-to-seed spread?
# Time: ~35-55 min per run on 2 cores (4 runs); on one GPU a few minutes per run.
# The committed results were made with model.chunk_size=64 (the default then; now `auto`,
# 16 texts per call on CPU): add that override to draw the same dropout masks as they did.
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}

for seed in 43 44; do
    python train.py +exp=allnli_mrl model=minilm_l6 trainer=cpu seed=$seed
    python train.py +exp=allnli_baseline model=minilm_l6 trainer=cpu seed=$seed
done
# copy each run's results.json into the committed study folder, then one report over all seeds
study=experiments/results/allnli_minilm_cpu_study
for run in outputs/runs/allnli_{mrl,baseline}/seed4[234]/model=minilm_l6; do
    exp=$(basename "$(dirname "$(dirname "$run")")") seed=$(basename "$(dirname "$run")")
    mkdir -p "$study/$exp/$seed" && cp "$run/results.json" "$study/$exp/$seed/"
done
python -m mrl.report "$study"   # -> $study/report.md, report.csv, report.png

#!/usr/bin/env bash
# The data axis on a 2-core CPU: all-MiniLM-L6-v2 trained on STS-B's 5,749 scored training pairs
# with CoSENT (MRL and the full-width baseline, seeds 42/43/44; 1 epoch = 360 steps of 16 pairs,
# like the 1-epoch NLI study; the experiment's default is 4), reported next to the NLI-triplet/MNRL
# study (3 seeds each). Evaluation is STS-B test for all of them.
# Question: which data and loss give the better size-versus-performance curve, and does MRL's
# gain at small dims hold when training on scored pairs?
# Time: see conf/sweep/data.yaml (measured times are in the README's Results).
# The committed results were made with model.chunk_size=64 (the default then; now `auto`,
# 16 texts per call on CPU): add that override to draw the same dropout masks as they did.
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}

for seed in 42 43 44; do
    python train.py +exp=stsb_cosent_mrl model=minilm_l6 trainer=cpu seed=$seed trainer.max_epochs=1
    python train.py +exp=stsb_cosent_baseline model=minilm_l6 trainer=cpu seed=$seed trainer.max_epochs=1
done
out=experiments/results/data_axis_minilm_cpu
for run in outputs/runs/stsb_cosent_{mrl,baseline}/seed4[234]/model=minilm_l6,trainer.max_epochs=1; do
    exp=$(basename "$(dirname "$(dirname "$run")")") seed=$(basename "$(dirname "$run")")
    mkdir -p "$out/$exp/$seed" && cp "$run/results.json" "$out/$exp/$seed/"
done
study=experiments/results/allnli_minilm_cpu_study   # the NLI runs (allnli_minilm_cpu*.sh)
for exp in allnli_mrl allnli_baseline; do
    for seed in seed42 seed43 seed44; do
        mkdir -p "$out/$exp/$seed" && cp "$study/$exp/$seed/results.json" "$out/$exp/$seed/"
    done
done
python -m mrl.report "$out" --reference stsb_cosent_baseline

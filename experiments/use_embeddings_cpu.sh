#!/usr/bin/env bash
# Issue 5 numbers on the 2-core CPU: export the seed-42 MRL and baseline runs, evaluate them and
# the untrained backbone on STS-B/STS12-16/SICK-R at every dim, and run shortlist-then-rerank
# retrieval for each. Time: ~20 min per eval.py run and ~5 min per retrieval run on 2 busy cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}
out=experiments/results/evals
mrl="outputs/runs/allnli_mrl/seed42/model=minilm_l6"
base="outputs/runs/allnli_baseline/seed42/model=minilm_l6"
for run in "$mrl" "$base"; do
    # runs made before last.ckpt was saved at the end hold step 200 of 221: export that, labelled
    [ -d "$run/sentence-transformers" ] || python -m mrl.export "$run" --allow-earlier-checkpoint
done
python eval.py model=sentence-transformers/all-MiniLM-L6-v2
cp outputs/evals/sentence-transformers_all-MiniLM-L6-v2/benchmarks.md $out/all-MiniLM-L6-v2_untrained_benchmarks.md
python eval.py "model='$mrl'"
cp "outputs/evals/outputs_runs_allnli_mrl_seed42_model=minilm_l6/benchmarks.md" $out/allnli_mrl_seed42_benchmarks.md
python -m mrl.retrieval "$mrl" --out $out/retrieval_allnli_mrl_seed42.md
python -m mrl.retrieval "$base" --out $out/retrieval_allnli_baseline_seed42.md
python -m mrl.retrieval sentence-transformers/all-MiniLM-L6-v2 --out $out/retrieval_all-MiniLM-L6-v2_untrained.md

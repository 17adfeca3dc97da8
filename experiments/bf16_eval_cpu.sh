#!/usr/bin/env bash
# Issue 30's study, part 2 (after experiments/bf16_cpu.sh): score and report.
# 1. eval.py (fp32) on every run of outputs/bf16_study: BEIR SciFact test (300 queries, 5,183
#    documents, 128 tokens; per-query scores in queries/scifact.npz), and for the bf16 runs STS-B
#    test at 64 tokens: the bf16-trained weights scored in fp32 (the runs' own test ran in bf16).
# 2. experiments/results/bf16_cpu/: the committed fp32 seeds 42-44 (comparators_cpu_n28142/mrl),
#    this session's fp32 re-runs and the bf16 runs; mrl.report with two-level intervals on STS-B
#    against the committed fp32 seeds; SciFact nDCG@10 differences with two-level intervals over
#    queries and seeds (bf16 against the fp32 re-runs: the committed models were not kept); the
#    loss curves of seed 42 in both precisions (benchmarks/compare_precisions.py).
# Usage: bash experiments/bf16_eval_cpu.sh. A finished eval is skipped on a re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}
export HF_HUB_OFFLINE=1
root=outputs/bf16_study
dest=experiments/results/bf16_cpu
evaluate() {  # run-folder out-name eval.py-overrides...
    local run=$1 name=$2; shift 2
    [[ -f $run/$name/results.json ]] && return
    python eval.py "model='$run'" device=cpu "hydra.run.dir=$run/$name" "$@"
}
for run in "$root"/*/seed*; do
    [[ -f $run/results.json ]] || continue
    evaluate "$run" eval_scifact benchmarks=scifact max_seq_length=128
    [[ $run == */bf16/* ]] && evaluate "$run" eval_stsb_fp32 benchmarks=stsb max_seq_length=64
done

rm -rf "$dest" && mkdir -p "$dest"
copy() {  # group seed source-folder
    mkdir -p "$dest/sts/$1/seed$2"
    cp "$3/results.json" "$3/test_pairs.npz" "$dest/sts/$1/seed$2/"
}
for seed in 42 43 44; do copy fp32 "$seed" "experiments/results/comparators_cpu_n28142/mrl/seed$seed"; done
for run in "$root"/*/seed*; do
    [[ -f $run/results.json ]] || continue
    arm=$(basename "$(dirname "$run")") seed=${run##*seed}
    group=$([[ $arm == fp32 ]] && echo fp32_rerun || echo bf16)
    copy "$group" "$seed" "$run"
    [[ -f $run/eval_stsb_fp32/results.json ]] && copy bf16_trained_fp32_scored "$seed" "$run/eval_stsb_fp32"
    mkdir -p "$dest/scifact/$arm/seed$seed"
    cp "$run/eval_scifact/results.json" "$dest/scifact/$arm/seed$seed/eval_scifact.json"
    cp "$run/eval_scifact/queries/scifact.npz" "$dest/scifact/$arm/seed$seed/"
done
python experiments/strip_gold.py "$dest/sts"
python -m mrl.report "$dest/sts" --group-by folder --reference fp32
# the fp32 side of SciFact needs the fp32 re-runs; without them, the bf16 seeds' scores alone
reference=$([[ -d $dest/scifact/fp32 ]] && echo fp32 || echo bf16)
python experiments/retrieval_intervals.py "$dest/scifact" --reference "$reference" \
    --out "$dest/scifact/report.md"
if [[ -f $root/fp32/seed42/results.json && -f $root/bf16/seed42/results.json ]]; then
    python benchmarks/compare_precisions.py "$root/fp32/seed42" "$root/bf16/seed42" --window 5 \
        --out "$dest/loss_curves_seed42.json" --plot "$dest/loss_curves_seed42.png" || true
fi
echo "report: $dest"

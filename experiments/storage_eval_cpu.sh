#!/usr/bin/env bash
# Issue 31's study, part 2 (after experiments/storage_cpu.sh and the fp32 runs of
# experiments/bf16_cpu.sh): every representation scored at every size, then the report.
# For each seed (42, 43), eval.py at 128 tokens on STS-B test, BEIR SciFact test and STS-B
# validation (conf/evaluate/benchmarks/storage_axis.yaml), dims 384 ... 2:
#   mrl, baseline                 the models' prefixes
#   baseline+random_subset        5 random coordinate orders (seed = the model's)
#   baseline+pca, baseline+adaptor  fitted on the first 4,000 training triplets (as the
#                                 comparators study)
#   each of these stored as float32, float16, int8 and binary (one encode; int8 / binary
#   calibrated on 2,000 training anchors);
#   baseline+csr                  a top-k sparse code per k = 1 ... 42 (6k bytes: 6 ... 252),
#                                 trained on the same 4,000 triplets for 20 epochs (640 steps:
#                                 at the default 5 its loss still falls, docs/comparators.md).
# Each eval folder is copied (maps and coders left out, gold scores stripped) into
# experiments/results/storage_cpu/<representation>/seed<S>/, then experiments/storage_axis.py
# writes the report: at each budget of 4 ... 256 bytes, each representation's form picked on
# STS-B validation, its STS-B test and SciFact nDCG@10, and its difference from MRL with
# two-level intervals (test pairs or queries, and seeds).
# Time: 2.5-3 min per eval on the 2-core CPU when nothing else runs, CSR 7.5 min (12 evals,
# ~45 min, 2026-12-07). A finished eval is skipped on a re-run.
# Usage: bash experiments/storage_eval_cpu.sh [SEED ...]   (default: 42 43; then the report)
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}
export HF_HUB_OFFLINE=1
work=outputs/storage_study/evals
dest=experiments/results/storage_cpu
common=(benchmarks=storage_axis max_seq_length=128 device=cpu transform_fit.max_samples=4000)
dims="dims=[384,256,128,64,32,16,8,4,2]"
kinds="storage=[float32,float16,int8,binary]"
evaluate() {  # name seed model eval.py-overrides...
    local name=$1 seed=$2 model=$3; shift 3
    local dir=$work/$name/seed$seed
    [[ -f $model/results.json ]] || { echo "skip $name seed $seed: no model at $model"; return; }
    local start; start=$(date +%s)
    [[ -f $dir/results.json ]] || python eval.py "model='$model'" "${common[@]}" "hydra.run.dir=$dir" "$@"
    echo "$name seed=$seed: $(( $(date +%s) - start )) s"
    rm -rf "$dest/$name/seed$seed" && mkdir -p "$dest/$name/seed$seed"
    (cd "$dir" && find . \( -name results.json -o -name test_pairs.npz -o -name benchmarks.md \
        -o -path '*/queries/*.npz' \) -not -path './.hydra/*') | while read -r file; do
        mkdir -p "$dest/$name/seed$seed/$(dirname "$file")"
        cp "$dir/$file" "$dest/$name/seed$seed/$file"
    done
}
for seed in "${@:-42 43}"; do
    for s in $seed; do
        mrl=outputs/bf16_study/fp32/seed$s base=outputs/storage_study/baseline/seed$s
        evaluate mrl "$s" "$mrl" "$dims" "$kinds"
        evaluate baseline "$s" "$base" "$dims" "$kinds"
        evaluate baseline+random_subset "$s" "$base" "$dims" "$kinds" transform=random_subset transform_fit.seed="$s"
        evaluate baseline+pca "$s" "$base" "$dims" "$kinds" transform=pca
        evaluate baseline+adaptor "$s" "$base" "$dims" "$kinds" transform=adaptor transform_fit.seed="$s"
        evaluate baseline+csr "$s" "$base" transform=csr "transform_fit.k=[42,32,16,8,4,2,1]" transform_fit.seed="$s" \
            transform_fit.epochs=20
    done
done
python experiments/strip_gold.py "$dest"   # no copy of the benchmark's scores in the commit
python experiments/storage_axis.py "$dest" --reference mrl --out "$dest"

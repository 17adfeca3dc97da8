#!/usr/bin/env bash
# Issue 28's study: does LoRA keep the Matryoshka property? all-MiniLM-L6-v2, MRL (MNRL at
# 384/256/128/64/32, weight 1) on the first N shared NLI triplets (N=4000: 125 steps of 32),
# 1 epoch, 64 tokens, 10 % warm-up, fp32: full fine-tuning (lr 2e-5, the comparators' setting)
# against LoRA r=16, alpha 32 on every linear layer (attention and MLP; lr 2e-4, the usual
# 10x for adapters, fixed before the study, not tuned), seeds 42 and 43 each. Then eval.py on each
# export: STS-B test and BEIR SciFact test (300 queries, 5,183 documents, 128 tokens) at every dim.
# Step time and peak memory: benchmarks/bench_lora.py (run alone; timings here share the cores).
# Report: experiments/results/lora_cpu/ (python -m mrl.report ... --group-by folder --reference full).
# Usage: bash experiments/lora_cpu.sh [N_TRIPLETS]. A finished run or eval is skipped on a re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}
export HF_HUB_OFFLINE=1
n=${1:-4000}
root=outputs/lora_study/n$n
common=(+exp=allnli_mrl model=minilm_l6 trainer=cpu logger=csv callbacks.progress_bar=none
        data.batch_size=32 data.max_seq_length=64 data.max_train_samples=$n)
train() {  # name seed [overrides...]
    local name=$1 seed=$2; shift 2
    local start; start=$(date +%s)
    python train.py "${common[@]}" seed="$seed" "hydra.run.dir=$root/$name/seed$seed" "$@"
    echo "$name seed=$seed: $(( $(date +%s) - start )) s"
}
evaluate() {  # name seed
    local run=$root/$1/seed$2
    [[ -f $run/eval/results.json ]] && return
    python eval.py "model='$run/sentence-transformers'" benchmarks=sts_and_scifact \
        max_seq_length=128 device=cpu "hydra.run.dir=$run/eval"
}
for seed in 42 43; do
    train full "$seed" optim.lr=2e-5
    train lora "$seed" optim.lr=2e-4 model.lora.r=16 model.lora.alpha=32
done
for seed in 42 43; do evaluate full "$seed"; evaluate lora "$seed"; done
echo "all runs and evals done"

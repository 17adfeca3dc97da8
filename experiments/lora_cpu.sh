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

# Collect (results, STS-B test pairs, the eval's table) and report: two-level intervals on STS-B;
# SciFact nDCG@10 by seed (eval.py keeps no per-query scores, so no interval there).
dest=experiments/results/lora_cpu
for arm in full lora; do for seed in 42 43; do
    mkdir -p "$dest/$arm/seed$seed"
    cp "$root/$arm/seed$seed/results.json" "$root/$arm/seed$seed/test_pairs.npz" "$dest/$arm/seed$seed/"
    cp "$root/$arm/seed$seed/eval/results.json" "$dest/$arm/seed$seed/eval_sts_scifact.json"
    du -b "$root/$arm/seed$seed/checkpoints/last.ckpt" > "$dest/$arm/seed$seed/checkpoint_bytes.txt"
done; done
python -m mrl.report "$dest" --group-by folder --reference full
python - "$dest" <<'PY'
import json, statistics, sys
from pathlib import Path
dest = Path(sys.argv[1])
rows, dims = {}, None
for arm in ("full", "lora"):
    per_seed = [json.loads(p.read_text())["benchmarks"]["scifact/ndcg@10"]
                for p in sorted((dest / arm).glob("seed*/eval_sts_scifact.json"))]
    dims = dims or sorted(map(int, per_seed[0]), reverse=True)
    rows[arm] = {d: [s[str(d)] for s in per_seed] for d in dims}
lines = ["SciFact test nDCG@10 (eval.py, 300 queries, 5,183 documents, 128 tokens): mean of the "
         "seeds, each seed in brackets.", "", "| arm | " + " | ".join(map(str, dims)) + " |",
         "|" + " --- |" * (len(dims) + 1)]
for arm, by_dim in rows.items():
    cells = [f"{statistics.mean(v):.4f} ({', '.join(f'{x:.4f}' for x in v)})" for v in by_dim.values()]
    lines.append(f"| {arm} | " + " | ".join(cells) + " |")
(dest / "scifact.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY

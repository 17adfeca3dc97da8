#!/usr/bin/env bash
# Issue 16's study: which training data helps which prefix sizes. all-MiniLM-L6-v2, MRL, 1 epoch,
# the setup of experiments/comparators_cpu.sh (first N rows, batch 32, 64 tokens, lr 2e-5):
#   (a) the shared NLI triplets as today        -> comparators_cpu.sh's allnli_mrl runs (seeds 42, 43)
#   (b) the 64k shared NLI pairs: entailment pairs (label 0) with hard negatives mined by the
#       untrained backbone (python -m mrl.mine: ranks 10-100, margin 0.05 below the positive),
#       k=1 and k=3 negatives per anchor, seeds 42 and 43
#   (c) the mixture NLI triplets (MNRL) + STS-B train pairs (CoSENT), seed 42 (data=nli_stsb_mixture)
# then STS-B test (each run's own) and BEIR SciFact test (eval.py) of seed 42 and the backbone.
# Time: mining ~5 min, ~5 min per run (5 runs), ~3 min per SciFact evaluation, one CPU thread.
# Usage: bash experiments/data_choices_cpu.sh [N] [PART]: PART all (default) | mine | 42 | 43 |
# mixture, so two lanes can share the runs (a seed part mines first unless the mined file is
# there or the other lane is mining it; the mixture needs none; a finished run is skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}
n=${1:-4000} part=${2:-all}
[[ $part =~ ^(all|mine|42|43|mixture)$ ]] || { echo "error: PART is all, mine, 42, 43 or mixture, not '$part'." >&2; exit 2; }
mined=outputs/mined/allnli-pairs-k3.jsonl
while [[ $part != mixture && ! -f $mined ]] && pgrep -f "mrl.mine .*--out $mined" > /dev/null; do sleep 30; done  # the other lane mines
mkdir -p outputs/mined
if [[ $part != mixture && ! -f $mined ]]; then   # the mixture needs no mined file
    python -m mrl.mine sentence-transformers/all-MiniLM-L6-v2 "$MRL_DATA_DIR/allnli/train.jsonl" \
        --out "$mined" --anchor premise --positive hypothesis --where label=0 \
        --k 3 --ranks 10 100 --margin 0.05 --max-seq-length 64
fi
[[ $part == mine ]] && exit 0
# the mined file read through MRL_DATA_DIR: a folder with the shared layout plus mined/
data=outputs/mined/data
mkdir -p "$data"
for entry in "$MRL_DATA_DIR"/*; do [[ -e $data/$(basename "$entry") ]] || ln -s "$(realpath "$entry")" "$data/"; done
[[ -e $data/mined ]] || ln -s "$(realpath outputs/mined)" "$data/mined"
common=(model=minilm_l6 trainer=cpu logger=csv callbacks.progress_bar=none
        data.batch_size=32 data.max_seq_length=64 data.max_train_samples=$n optim.lr=2e-5
        eval.score_untrained=false)
run() {  # exp seed [overrides...] (train.py skips a finished run)
    local exp=$1 seed=$2; shift 2
    local start; start=$(date +%s)
    MRL_DATA_DIR=$data python train.py +exp="$exp" seed="$seed" "${common[@]}" "$@"
    echo "$exp seed=$seed $*: $(( $(date +%s) - start )) s"
}
k1=(data.train.local_file=mined/allnli-pairs-k3.jsonl 'data.train.columns=[anchor,positive,negative_1]')
k3=(data.train.local_file=mined/allnli-pairs-k3.jsonl
    'data.train.columns=[anchor,positive,negative_1,negative_2,negative_3]')
for seed in 42 43; do
    [[ $part == all || $part == "$seed" ]] || continue
    run allnli_mrl $seed "${k1[@]}"
    run allnli_mrl $seed "${k3[@]}"
done
[[ $part == all || $part == mixture ]] && run mixture_mrl 42
echo "data runs done ($part)"

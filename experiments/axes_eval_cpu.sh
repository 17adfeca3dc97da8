#!/usr/bin/env bash
# Issues 15 and 17, evaluation and reports, after experiments/axes_cpu.sh and comparators_cpu.sh.
#   2D: the layers x dims grid (STS-B test) of the 2D runs (their own), of MRL and the baseline
#       (eval.py grid=true on their exports), of sentence-transformers' Matryoshka2dLoss peer
#       (benchmarks/train_st_peer.py, where trained) and of the untrained backbone, one report
#       with the difference heatmaps against MRL -> experiments/results/matryoshka_2d_cpu/
#   QAT: Spearman against bytes for MRL, MRL+QAT(binary), MRL+QAT(int8+binary) and the baseline
#       (mrl.quantization; a QAT model quantizes with its own calibration), and binary shortlist +
#       float rerank recall (mrl.retrieval --binary; NLI dev and BEIR SciFact) -> experiments/results/qat_cpu/
# Time: ~1-2 min per model and step, one CPU thread.
# Usage: bash experiments/axes_eval_cpu.sh [N] [PART]: PART is 2d, qat (= bytes and retrieval),
# bytes, retrieval or all (the default). A retrieval table already written is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
export MRL_DATA_DIR=${MRL_DATA_DIR:-../shared/data} MRL_MODEL_DIR=${MRL_MODEL_DIR:-../shared/models}
n=${1:-4000} part=${2:-all}
tag=$([[ $n == 4000 ]] || echo "_n$n")   # the 4,000-row study keeps its folder; other sizes get their own
run_of() {  # exp seed [overrides after eval.score_untrained, default: the plain recipe]
    local name
    name=$(ls "outputs/runs/$1/seed$2" 2>/dev/null | grep -E "^data.batch_size=32,data.max_seq_length=64,data.max_train_samples=$n,eval.score_untrained=(true|false),${3:-model=minilm_l6,optim.lr=2e-5}\$" | head -1)
    [[ -n $name && -f outputs/runs/$1/seed$2/$name/results.json ]] && echo "outputs/runs/$1/seed$2/$name"
    return 0
}
copy() {  # study group seed folder
    mkdir -p "$1/$2/seed$3"
    cp "$4/results.json" "$1/$2/seed$3/"
    [[ -f $4/test_pairs.npz ]] && cp "$4/test_pairs.npz" "$1/$2/seed$3/"
    return 0
}
grid_of() {  # model out: eval.py's grid of any model
    [[ -f $2/results.json ]] || python eval.py model="'$1'" benchmarks=stsb max_seq_length=64 grid=true \
        hydra.run.dir="$2"
}
twod=experiments/results/matryoshka_2d_cpu$tag
if [[ $part == 2d || $part == all ]]; then
for seed in 42 43; do
    two=$(run_of allnli_mrl $seed "matryoshka.layer_weighting=by_depth,matryoshka.layers=all,model=minilm_l6,optim.lr=2e-5")
    mrl=$(run_of allnli_mrl $seed)
    base=$(run_of allnli_baseline $seed)
    [[ -n $two ]] && copy $twod 2d $seed "$two"
    for pair in "mrl:$mrl" "baseline:$base"; do
        group=${pair%%:*} folder=${pair#*:}
        [[ -n $folder ]] || continue
        grid_of "$folder" "outputs/grids/n$n/$group/seed$seed"
        copy $twod "$group" $seed "outputs/grids/n$n/$group/seed$seed"
    done
done
grid_of sentence-transformers/all-MiniLM-L6-v2 outputs/grids/untrained
copy $twod untrained 0 outputs/grids/untrained
peer=outputs/st_peer/n$n/matryoshka2d-s42   # sentence-transformers' Matryoshka2dLoss (its defaults)
if [[ -f $peer/peer.json ]]; then
    grid_of "$peer" "outputs/grids/n$n/st_matryoshka2d/seed42"
    copy $twod st_matryoshka2d 42 "outputs/grids/n$n/st_matryoshka2d/seed42"
fi
python experiments/strip_gold.py $twod   # no copy of the benchmark scores in the commit
python -m mrl.report $twod --group-by folder --reference mrl
fi
[[ $part == 2d ]] && { echo "2D evaluation done"; exit 0; }

qat=experiments/results/qat_cpu$tag
mkdir -p $qat
models=() names=()
for seed in 42 43; do
    for pair in "mrl:model=minilm_l6,optim.lr=2e-5" "qat_binary:model=minilm_l6,optim.lr=2e-5,qat=binary" \
                "qat_int8_binary:model=minilm_l6,optim.lr=2e-5,qat=int8_binary"; do
        folder=$(run_of allnli_mrl $seed "${pair#*:}")
        [[ -n $folder ]] && models+=("$folder") names+=("${pair%%:*}-s$seed")
    done
    base=$(run_of allnli_baseline $seed)
    [[ -n $base ]] && models+=("$base") names+=("baseline-s$seed")
done
if [[ $part != retrieval ]]; then
    python -m mrl.quantization "${models[@]}" --name "${names[@]}" --out $qat
    python experiments/bytes_envelope.py $qat/quantization.csv --out $qat   # best score per byte budget
    python experiments/bytes_intervals.py $qat --kinds binary int8 float32 \
        --compare qat_binary:mrl qat_int8_binary:mrl qat_binary:baseline mrl:baseline
fi
scifact=$MRL_DATA_DIR/beir/scifact   # the second retrieval set: SciFact's 1,109 claims over 5,183 abstracts
for i in "${!models[@]}"; do
    [[ $part != bytes && ${names[$i]} == *-s42 ]] || continue
    name=${names[$i]%-s42}
    [[ -f $qat/retrieval_$name.md ]] || python -m mrl.retrieval "${models[$i]}" --binary 64 128 256 \
        --d-small 64 --k 100 --out "$qat/retrieval_$name.md"
    [[ -f $qat/retrieval_scifact_$name.md || ! -f $scifact/corpus.jsonl ]] ||
        python -m mrl.retrieval "${models[$i]}" --binary 64 128 256 --d-small 64 --k 100 \
            --queries "$scifact/queries.jsonl" --corpus "$scifact/corpus.jsonl" \
            --out "$qat/retrieval_scifact_$name.md"
done
echo "axes evaluation done"

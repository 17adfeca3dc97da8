#!/usr/bin/env bash
# The one prepared GPU run (issue 18): ~9 min on one H100/H200 when the `device` tool lends one.
#   bash benchmarks/gpu_check.sh OUT_DIR            (on the GPU machine; every number -> OUT_DIR/*.json)
#   ARCH=tiny STEPS=6 BATCH=8 DEVICE=cpu bash benchmarks/gpu_check.sh /tmp/check   (the CPU rehearsal)
#   COMPILE_CHUNKS="null": compile only at those chunk sizes (the test suite's rehearsal; a CPU
#   compile takes ~a minute each); default: all three
# (a) the card, torch / CUDA versions, bf16 support; (b) gpu_throughput.py for mpnet-base at batch
# 128, bf16-mixed, model.chunk_size 64 / 128 / null, each without and with --compile, chunk 64
# through the transformers forward (model.unpadded=false), and cached mode at batch 1024; (c) the same seed in bf16-mixed and fp32 (a few hundred steps of the
# synthetic data) and whether bf16's per-dim losses track fp32's (compare_precisions.py).
# Every step keeps going if one fails (its error is in OUT_DIR/<name>.log), so one bad setting
# cannot spend the lease.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?give the folder for the JSON files}
mkdir -p "$out"
arch=${ARCH:-mpnet-base} steps=${STEPS:-120} batch=${BATCH:-128} device=${DEVICE:-gpu}
compile_chunks=" ${COMPILE_CHUNKS:-64 128 null} "
warmup=$(( steps / 6 > 0 ? steps / 6 : 1 ))
precision=${PRECISION:-bf16-mixed}
[[ $device == cpu ]] && precision=32-true
python - > "$out/device.json" <<'PY'
import json, platform, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    info.update(device=torch.cuda.get_device_name(), bf16=torch.cuda.is_bf16_supported(),
                memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
print(json.dumps(info, indent=2))
PY
cat "$out/device.json"
bench() {  # name [gpu_throughput.py options...]
    local name=$1; shift
    echo "== $name"
    python benchmarks/gpu_throughput.py --arch "$arch" --device "$device" --out "$out/$name.json" "$@" \
        > "$out/$name.log" 2>&1 && grep -E "samples_per_s|mfu|median_step" "$out/$name.log" \
        || { echo "   failed: see $out/$name.log"; tail -3 "$out/$name.log"; }
}
for chunk in 64 128 null; do
    bench "chunk${chunk}" --batch "$batch" --steps "$steps" --warmup "$warmup" --precision "$precision" --chunk-size "$chunk"
    [[ $compile_chunks == *" $chunk "* ]] || continue
    bench "chunk${chunk}_compile" --batch "$batch" --steps "$steps" --warmup "$warmup" --precision "$precision" --chunk-size "$chunk" --compile
done
# the chunked transformers forward at the default chunk size: what the unpadded forward gains
bench chunk64_padded --batch "$batch" --steps "$steps" --warmup "$warmup" --precision "$precision" --chunk-size 64 --unpadded false
bench cached1024 --batch $(( batch * 8 )) --steps $(( steps / 4 > 2 ? steps / 4 : 3 )) --warmup 1 \
    --precision "$precision" --cached-mini-batch "$batch"
# (c) the same seed and data in both precisions (CPU rehearsal: fp32 twice, which must agree)
track_steps=$(( steps * 2 ))
bench track_fp32 --batch 32 --steps "$track_steps" --warmup 1 --precision 32-true --seed 7
bench track_other --batch 32 --steps "$track_steps" --warmup 1 --precision "$precision" --seed 7
python benchmarks/compare_precisions.py "$out/track_fp32.json" "$out/track_other.json" \
    --out "$out/precision_tracking.json" || echo "   bf16 does not track fp32: see $out/precision_tracking.json"
echo "done: $(ls "$out" | wc -l) files in $out"

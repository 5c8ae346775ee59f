#!/usr/bin/env bash
# The GPU side-by-side benchmark, run on a machine with an NVIDIA GPU from the repository root:
#
#   bash scripts/bench-gpu.sh OFFICIAL_DIR [GOLDEN_DIR] [OUT_DIR]
#
# OFFICIAL_DIR is a checkout of github:namithap10/xinc (its image_inr/ and HNeRV/ folders are
# enough); GOLDEN_DIR holds ffn_0005/ and nerv_synth/ (their weights, meta.json and
# io.safetensors; absent: seeded random weights, which time the same). The machine needs
# python3 with torch (CUDA), numpy, einops and safetensors, and what scripts/gpu-check.sh needs
# (the CUDA build of xinc from scripts/build-cuda.sh, the CUDA 13 libraries).
#
# 1. The official calls on the GPU: scripts/reference/bench_official.py --device cuda (warm-up,
#    then medians, each call synchronised), in full f32 as xinc computes; then again with TF32
#    allowed (PyTorch's default for convolutions; the block-1 call fails its own check there, so
#    it is left out of that run).
# 2. xinc on the same GPU: scripts/gpu-check.sh (every canvas layer on 3 frames, the NeRV
#    training's net step).
# 3. The table: scripts/reference/bench_gpu_table.py, into OUT_DIR/table.md.
#
# OUT_DIR (default $OUT/bench-gpu, or out/bench-gpu) receives official-cuda.json,
# official-cuda-tf32.json, device_check.json, check.txt and table.md.
set -euo pipefail
cd "$(dirname "$0")/.."

official="${1:?usage: $0 OFFICIAL_DIR [GOLDEN_DIR] [OUT_DIR]}"
golden="${2:-}"
out="${3:-${OUT:-out}/bench-gpu}"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Each side runs even if the other fails; the script then exits non-zero.
status=0
echo "== official calls on the GPU"
PYTHONUNBUFFERED=1 python3 scripts/reference/bench_official.py --device cuda \
  --threads "$(nproc)" --repeats 10 --official "$official" ${golden:+--golden "$golden"} \
  --out "$out/official-cuda.json" || status=$?
echo "== official calls on the GPU, TF32 allowed (PyTorch's default for convolutions)"
PYTHONUNBUFFERED=1 python3 scripts/reference/bench_official.py --device cuda --tf32 \
  --threads "$(nproc)" --repeats 10 --official "$official" ${golden:+--golden "$golden"} \
  --skip nerv_block1 --out "$out/official-cuda-tf32.json" || status=$?

echo "== xinc on the GPU"
bash scripts/gpu-check.sh "$work/gpu-check" --repeats 10 --frames 3 || status=$?
cp "$work/gpu-check/device_check.json" "$work/gpu-check/check.txt" "$out/" || status=1

if [ -f "$out/official-cuda.json" ] && [ -f "$out/device_check.json" ]; then
  python3 scripts/reference/bench_gpu_table.py "$out/official-cuda.json" \
    "$out/device_check.json" "$out/official-cuda-tf32.json" > "$out/table.md" || status=$?
  cat "$out/table.md"
fi
exit "$status"

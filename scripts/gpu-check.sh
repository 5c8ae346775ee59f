#!/usr/bin/env bash
# The GPU check, run on a machine with an NVIDIA GPU from the repository root:
#
#   bash scripts/gpu-check.sh [OUT_DIR]
#
# It needs the stripped binary that scripts/build-cuda.sh writes to target-gpu/xinc, or its gzipped
# copy target-gpu/xinc.gz (the GPU machine needs no Rust), the NVIDIA driver, and CUDA 13 libraries (libcublas.so.13,
# libcurand.so.10, libcudart.so.13). Those are taken from the nvidia/cu13 folder of a Python
# site-packages (the PyTorch cu13 wheels ship them) or from $XINC_CUDA_LIB.
#
# It runs `xinc --device cuda check-device`: every canvas layer of the bundled FFN and NeRV (the
# golden configurations) and a short training of each, on the GPU and on the CPU; it compares
# them (relative difference <= 1e-4) and times the GPU. It writes to OUT_DIR (default
# $OUT/gpu-check, or out/gpu-check): device_check.json, check.txt, gpu.txt, ldd.txt and
# loaded-libs.txt (every shared library the process loaded, from LD_DEBUG).
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${XINC_BIN:-target-gpu/xinc}"
out="${1:-${OUT:-out}/gpu-check}"
mkdir -p "$out"
if [ ! -x "$bin" ] && [ -f "$bin.gz" ]; then
  gunzip -c "$bin.gz" > "$bin.tmp" && chmod +x "$bin.tmp" && mv "$bin.tmp" "$bin"
fi
[ -x "$bin" ] || { echo "no $bin: build it with scripts/build-cuda.sh" >&2; exit 1; }

cuda_lib="${XINC_CUDA_LIB:-}"
if [ -z "$cuda_lib" ]; then
  for py in python3 python; do
    cand="$($py -c 'import site,os;print(os.path.join(site.getsitepackages()[0],"nvidia","cu13","lib"))' 2>/dev/null || true)"
    [ -n "$cand" ] && [ -d "$cand" ] && { cuda_lib="$cand"; break; }
  done
fi
[ -n "$cuda_lib" ] || { echo "no CUDA 13 libraries found: set XINC_CUDA_LIB" >&2; exit 1; }
export LD_LIBRARY_PATH="$cuda_lib:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "== LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee "$out/env.txt"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1 || true
cat "$out/gpu.txt"
ldd "$bin" > "$out/ldd.txt" 2>&1 || true
nproc > "$out/cpus.txt"

status=0
LD_DEBUG=libs LD_DEBUG_OUTPUT="$out/ld" "$bin" --device cuda check-device --repo . --out "$out" "${@:2}" \
  2>&1 | tee "$out/check.txt" || status=$?
grep -h "calling init:" "$out"/ld.* 2>/dev/null | sed 's/.*calling init: //' | sort -u > "$out/loaded-libs.txt" || true
rm -f "$out"/ld.*
echo "== shared libraries loaded:"; cat "$out/loaded-libs.txt"
exit "$status"

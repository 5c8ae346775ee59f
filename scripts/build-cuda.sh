#!/usr/bin/env bash
# Builds (or only checks) xinc with the `cuda` feature on a machine without a GPU or a CUDA toolkit.
#
#   scripts/build-cuda.sh                release build; the stripped binary lands in target-gpu/xinc
#                                        (and gzipped in target-gpu/xinc.gz)
#   scripts/build-cuda.sh --check        what CI runs: the library built with `--features cuda`
#   scripts/build-cuda.sh --check-full   the same, with candle's own CUDA kernels compiled in full
#
# The CUDA 13.0 compiler and headers come from PyPI wheels in a virtualenv
# ($XINC_CUDA_VENV, default ~/.cache/xinc/cuda-venv); nothing is installed system-wide. The versions
# are pinned to 13.0 to match driver 580: a newer nvcc writes PTX that driver cannot JIT, and cudarc
# 0.19.10 rejects toolkits newer than 13.4 (../shared/docs/rust-stack.md §4).
# CUDA_COMPUTE_CAP defaults to 90 (H100/H200); set it for other GPUs.
#
# The check, and what it proves at what cost:
# - Every line of xinc that `feature = "cuda"` gates is in the library (the script fails if another
#   target gains one), so `cargo build --lib --features cuda` compiles all of it, against candle and
#   cudarc built with their `cuda` features. It builds in $CARGO_TARGET_DIR (.ci/run's test build):
#   only the crates the feature changes are compiled (candle-core, candle-nn, candle-kernels,
#   cudarc, xinc); nothing is linked, so no CUDA library is needed.
# - xinc's own kernels (build.rs) go through the real nvcc to PTX.
# - candle's kernels are a fixed input: the same sources (candle-kernels' version and checksum in
#   Cargo.lock) through the same nvcc wheels for the same compute capability always give the same
#   result. scripts/cuda/verified records the pins under which they were last compiled in full.
#   While the pins match it, `--check` only preprocesses candle's kernels with the real nvcc (headers
#   and flags checked; scripts/cuda/nvcc-preprocess-only) instead of generating device code for
#   them (the full compile, --check-full, took 15 minutes of wall time here, sharing the cores with
#   another build; README, "CI time"). When the pins change, or with
#   --check-full, they are compiled in full and scripts/cuda/verified is rewritten on success:
#   commit it with the change of pins.
#
# The binary links libcuda.so.1 (the driver), libcublas.so.13, libcurand.so.10 and libcudart.so.13.
# On the GPU machine, put the CUDA 13 libraries of a PyTorch cu13 wheel (or a toolkit) on
# LD_LIBRARY_PATH: see scripts/gpu-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=build
full=0
case "${1:-}" in
  --check) mode=check ;;
  --check-full) mode=check; full=1 ;;
  "") ;;
  *) echo "usage: $0 [--check | --check-full]" >&2; exit 2 ;;
esac

venv="${XINC_CUDA_VENV:-$HOME/.cache/xinc/cuda-venv}"
if [ "$mode" = build ]; then
  export CARGO_TARGET_DIR="${XINC_CUDA_TARGET_DIR:-$HOME/.cache/xinc/target-cuda}"
else
  # The check shares the CPU build's target dir (and flags): see the header.
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
fi

# Compiler, PTX assembler, NVVM (cicc + libdevice), headers. Enough for `cargo check`, which runs
# candle-kernels' nvcc build script but links nothing.
compile_wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)
# Link-time libraries of a full build.
link_wheels=(nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88)

wheels=("${compile_wheels[@]}")
[ "$mode" = build ] && wheels+=("${link_wheels[@]}")

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# One `pip show` per wheel: given several names, it succeeds when any one of them is installed.
missing=0
for w in "${wheels[@]%%==*}"; do
  "$venv/bin/python" -m pip show -q "$w" >/dev/null 2>&1 || missing=1
done
if [ "$missing" = 1 ]; then
  echo "== installing the CUDA 13.0 wheels into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${wheels[@]}"
fi
cu="$("$venv/bin/python" -c 'import site,os;print(os.path.join(site.getsitepackages()[0],"nvidia","cu13"))')"

# The wheels are not laid out like a toolkit: nvcc.profile expects targets/x86_64-linux/include,
# and `-l` needs unversioned library names.
mkdir -p "$cu/targets"
ln -sfn .. "$cu/targets/x86_64-linux"
if [ "$mode" = build ]; then
  for l in cudart.so.13 cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13; do
    [ -e "$cu/lib/lib$l" ] && ln -sf "lib$l" "$cu/lib/lib${l%.*}"
  done
  # No wheel ships the driver library. candle links cudarc with `-lcuda`, so link against a stub
  # with every driver symbol cudarc declares; the real libcuda.so.1 is loaded on the GPU machine.
  if [ ! -e "$cu/lib/stubs/libcuda.so" ]; then
    cargo fetch --locked -q
    sys="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10/src/driver/sys/mod.rs | head -1)"
    mkdir -p "$cu/lib/stubs"
    "$venv/bin/python" - "$sys" "$cu/lib/stubs/stub.c" <<'EOF'
import re, sys
names = sorted(set(re.findall(r'^\s+fn (cu[A-Za-z0-9_]+)\(', open(sys.argv[1]).read(), re.M)))
open(sys.argv[2], "w").write("".join(f"void {n}(void){{}}\n" for n in names))
EOF
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$cu/lib/stubs/libcuda.so" "$cu/lib/stubs/stub.c"
  fi
  export LIBRARY_PATH="$cu/lib/stubs:$cu/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
fi

export CUDA_ROOT="$cu" CUDA_HOME="$cu" CUDA_PATH="$cu" PATH="$cu/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
echo "== nvcc: $(nvcc --version | tail -1); compute cap $CUDA_COMPUTE_CAP; target dir $CARGO_TARGET_DIR"

if [ "$mode" = check ]; then
  others="$(grep -rln 'feature = "cuda"' src/bin tests benches examples 2>/dev/null || true)"
  [ -z "$others" ] || { echo "cuda-gated code outside the library, which --check does not build: $others" >&2; exit 1; }
  lock_entry() {  # NAME -> "NAME VERSION CHECKSUM" from Cargo.lock
    awk -v n="$1" '$0 == "name = \"" n "\"" {p = 1} p && /^$/ {exit} p && /^(version|checksum) = / {v = v " " $3}
      END {gsub(/"/, "", v); print n v}' Cargo.lock
  }
  pins="$(printf '%s\n' "$(lock_entry candle-kernels)" "$(lock_entry cudaforge)" "${compile_wheels[*]}" "compute_cap=$CUDA_COMPUTE_CAP")"
  verified=scripts/cuda/verified
  if [ "$full" = 0 ] && [ "$(grep -v '^#' "$verified" 2>/dev/null)" = "$pins" ]; then
    echo "== candle's kernels: pins as in $verified, so preprocessed only (scripts/cuda/nvcc-preprocess-only)"
    export XINC_REAL_NVCC="$cu/bin/nvcc" NVCC="$PWD/scripts/cuda/nvcc-preprocess-only"
  else
    echo "== candle's kernels: compiled in full (--check-full, or pins differ from $verified)"
    full=1
    # cudaforge keeps its own cache of compiled kernels in the build script's OUT_DIR, which a
    # preprocess-only run filled with placeholders: start candle-kernels' build from scratch.
    for d in "$CARGO_TARGET_DIR"/debug "$CARGO_TARGET_DIR"/*/debug; do
      rm -rf "$d"/build/candle-kernels-* "$d"/.fingerprint/candle-kernels-*
    done
  fi
  cargo build --locked --lib --features cuda
  if [ "$full" = 1 ]; then
    { echo "# Pins under which scripts/build-cuda.sh --check-full compiled candle's CUDA kernels in full"
      echo "# ($(date -u +%F), nvcc $(nvcc --version | tail -1)). Rewritten by that script; commit it."
      echo "$pins"; } > "$verified.tmp"
    mv "$verified.tmp" "$verified"
    echo "== recorded the pins in $verified"
  fi
  echo "== cuda check passed: the library builds with --features cuda"
else
  cargo build --locked --release --features cuda --bin xinc
  mkdir -p target-gpu
  strip -o target-gpu/xinc.tmp "$CARGO_TARGET_DIR/release/xinc"
  mv target-gpu/xinc.tmp target-gpu/xinc
  # The compressed copy is what travels to a GPU machine (gpu-check.sh unpacks it).
  gzip -6 -c target-gpu/xinc > target-gpu/xinc.gz.tmp && mv target-gpu/xinc.gz.tmp target-gpu/xinc.gz
  echo "== built target-gpu/xinc ($(du -h target-gpu/xinc | cut -f1)); needs: $(readelf -d target-gpu/xinc | grep -o '\[lib[^]]*' | tr -d '[' | tr '\n' ' ')"
fi

#!/usr/bin/env bash
# Builds (or only checks) xinc with the `cuda` feature on a machine without a GPU or a CUDA toolkit.
#
#   scripts/build-cuda.sh            release build; the stripped binary lands in target-gpu/xinc
#                                    (and gzipped in target-gpu/xinc.gz)
#   scripts/build-cuda.sh --check    `cargo check --features cuda --all-targets` (what CI runs)
#
# The CUDA 13.0 compiler and headers come from PyPI wheels in a virtualenv
# ($XINC_CUDA_VENV, default ~/.cache/xinc/cuda-venv); nothing is installed system-wide. The versions
# are pinned to 13.0 to match driver 580: a newer nvcc writes PTX that driver cannot JIT, and cudarc
# 0.19.10 rejects toolkits newer than 13.4 (../shared/docs/rust-stack.md §4).
# CUDA_COMPUTE_CAP defaults to 90 (H100/H200); set it for other GPUs.
# The cargo target dir defaults to ~/.cache/xinc/target-cuda, apart from the CPU build's.
#
# The binary links libcuda.so.1 (the driver), libcublas.so.13, libcurand.so.10 and libcudart.so.13.
# On the GPU machine, put the CUDA 13 libraries of a PyTorch cu13 wheel (or a toolkit) on
# LD_LIBRARY_PATH: see scripts/gpu-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=build
case "${1:-}" in
  --check) mode=check ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

venv="${XINC_CUDA_VENV:-$HOME/.cache/xinc/cuda-venv}"
export CARGO_TARGET_DIR="${XINC_CUDA_TARGET_DIR:-$HOME/.cache/xinc/target-cuda}"

# Compiler, PTX assembler, NVVM (cicc + libdevice), headers. Enough for `cargo check`, which runs
# candle-kernels' nvcc build script but links nothing.
compile_wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)
# Link-time libraries of a full build.
link_wheels=(nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88)

wheels=("${compile_wheels[@]}")
[ "$mode" = build ] && wheels+=("${link_wheels[@]}")

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -m pip show -q "${wheels[@]%%==*}" >/dev/null 2>&1; then
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
  cargo check --locked --features cuda --all-targets
else
  cargo build --locked --release --features cuda --bin xinc
  mkdir -p target-gpu
  strip -o target-gpu/xinc.tmp "$CARGO_TARGET_DIR/release/xinc"
  mv target-gpu/xinc.tmp target-gpu/xinc
  # The compressed copy is what travels to a GPU machine (gpu-check.sh unpacks it).
  gzip -6 -c target-gpu/xinc > target-gpu/xinc.gz.tmp && mv target-gpu/xinc.gz.tmp target-gpu/xinc.gz
  echo "== built target-gpu/xinc ($(du -h target-gpu/xinc | cut -f1)); needs: $(readelf -d target-gpu/xinc | grep -o '\[lib[^]]*' | tr -d '[' | tr '\n' ' ')"
fi

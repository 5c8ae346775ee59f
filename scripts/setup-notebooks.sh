#!/usr/bin/env bash
# Sets up the xinc notebook environment, then (with --lab) opens JupyterLab on notebooks/.
#
#   scripts/setup-notebooks.sh          install what is missing, print how to start
#   scripts/setup-notebooks.sh --lab    the same, then start JupyterLab (kernel "Rust (xinc)")
#
# Installs, skipping what is already there:
# - Jupyter (JupyterLab, nbconvert, nbclient, and plotly for its JupyterLab figure renderer: the
#   pinned set of scripts/notebook-requirements.txt)
#   in a virtualenv at $XINC_NOTEBOOK_VENV (default ~/.cache/xinc/notebook-venv);
# - evcxr_jupyter $EVCXR_VERSION with `cargo install --locked`, at opt-level 1 (see below);
# and, beside the evcxr build, builds xinc's dependencies the way the kernel needs them
# (scripts/xinc --build-only), so that the first notebook compiles only xinc and its cells
# (XINC_PREBUILD=0 skips it: .ci/run, whose test build does the same).
# The kernel spec is the repository's kernels/rust, found through JUPYTER_PATH=<repository root>;
# nothing is written into ~/.local/share/jupyter.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${XINC_CACHE:-$HOME/.cache/xinc}"
venv="${XINC_NOTEBOOK_VENV:-$cache/notebook-venv}"
requirements="$repo/scripts/notebook-requirements.txt"
EVCXR_VERSION=0.22.0

python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "python3 (3.9 or newer, with venv) is required" >&2; exit 1; }
command -v cargo >/dev/null || { echo "cargo is required (rustup toolchain 1.95 or newer for evcxr $EVCXR_VERSION)" >&2; exit 1; }

# Jupyter: reinstalled when the pinned set changes.
stamp="$venv/.xinc-requirements"
if [ -x "$venv/bin/jupyter" ] && cmp -s "$requirements" "$stamp"; then
  echo "== Jupyter: present in $venv"
else
  echo "== Jupyter: installing the pinned set into $venv"
  start=$SECONDS
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
  echo "== Jupyter: installed in $((SECONDS - start)) s"
fi

# evcxr_jupyter: the pinned version, from crates.io with its lock file.
# (evcxr_jupyter has no --version; cargo's install list records the version.)
# It is built at opt-level 1 instead of cargo install's 3: the build takes 13 % less CPU time, and
# an opt-level-3 build ran the notebooks' cells no faster within the noise of the measurement
# (README, "Notebooks"). The flags of the caller's xinc build (.ci/run exports RUSTFLAGS and
# CARGO_BUILD_TARGET for the notebook kernel) are not its business.
prebuild=""
if [ "${XINC_PREBUILD:-1}" != 0 ]; then
  mkdir -p "$cache"
  echo "== xinc: building its dependencies for the kernel in the background (scripts/xinc --build-only; log $cache/prebuild.log)"
  bash "$repo/scripts/xinc" --build-only > "$cache/prebuild.log" 2>&1 &
  prebuild=$!
  prebuild_start=$SECONDS
fi
if cargo install --list | grep -q "^evcxr_jupyter v$EVCXR_VERSION:"; then
  echo "== evcxr_jupyter $EVCXR_VERSION: present"
else
  echo "== evcxr_jupyter $EVCXR_VERSION: cargo install --locked at opt-level 1"
  start=$SECONDS
  # Its own build folder, so that a CARGO_TARGET_DIR set for xinc is neither used nor disturbed.
  env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_TARGET \
    CARGO_TARGET_DIR="$cache/evcxr-install-target" CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
    cargo install evcxr_jupyter --version "$EVCXR_VERSION" --locked --quiet
  rm -rf "$cache/evcxr-install-target"
  echo "== evcxr_jupyter $EVCXR_VERSION: installed in $((SECONDS - start)) s"
fi

if [ -n "$prebuild" ]; then
  wait "$prebuild" || { cat "$cache/prebuild.log" >&2; echo "building xinc failed" >&2; exit 1; }
  echo "== xinc: built in $((SECONDS - prebuild_start)) s"
fi

export JUPYTER_PATH="$repo${JUPYTER_PATH:+:$JUPYTER_PATH}"
# (Read the whole list first: `grep -q` on a pipe would close it early and fail the pipeline.)
specs="$("$venv/bin/jupyter" kernelspec list)"
grep -q "$repo/kernels/rust" <<<"$specs" \
  || { echo "the kernel spec $repo/kernels/rust is not visible to Jupyter:"$'\n'"$specs" >&2; exit 1; }
echo "== kernel: $repo/kernels/rust (through JUPYTER_PATH)"

if [ "${1:-}" = "--lab" ]; then
  shift
  exec "$venv/bin/jupyter" lab --notebook-dir="$repo/notebooks" "$@"
fi
cat <<EOF
Ready. Start JupyterLab with
  scripts/setup-notebooks.sh --lab
or run every notebook headlessly with
  scripts/run-notebooks.sh
EOF

#!/usr/bin/env bash
# Executes every notebook headlessly with the repository's Rust kernel, into out/notebooks/:
#   <name>.ipynb  the executed notebook (outputs included)
#   <name>.html   its HTML export (figures inline, plotly.js embedded: opens offline)
#   timings.tsv   seconds per notebook
# Fails on the first notebook with an error cell (a compile error, a panic, an `Err` from `?`), or
# whose HTML export, opened in headless Chromium, leaves a figure blank or logs a JavaScript error
# (scripts/check-pages.py). That browser check runs when Chromium is installed (a note says when
# it is not); XINC_CHECK_PAGES=1 requires it (CI), XINC_CHECK_PAGES=0 skips it.
#
#   scripts/run-notebooks.sh [NOTEBOOK.ipynb ...]     default: notebooks/*.ipynb in order
#
# First a warm-up kernel loads xinc alone (`:dep xinc`: when xinc changed, its kernel compiles it
# into the shared target dir, which the others then reuse; otherwise it takes the 20 s of evcxr's
# dependency analysis), then the notebooks run XINC_NOTEBOOK_JOBS at a time (default 2: a kernel
# spends most of its time on one core, in rust-analyzer and rustc), each in its own kernel slot; a
# notebook's log is printed when it ends.
#
# Needs scripts/setup-notebooks.sh first. The kernels build in the shared target dir (see
# kernels/rust/evcxr-kernel), so a notebook compiles only xinc and its cells when the README's main
# job or .ci/run has built the dependencies.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${XINC_CACHE:-$HOME/.cache/xinc}"
venv="${XINC_NOTEBOOK_VENV:-$cache/notebook-venv}"
out="${XINC_NOTEBOOK_OUT:-$repo/out/notebooks}"
timeout="${XINC_NOTEBOOK_TIMEOUT:-3600}"

[ -x "$venv/bin/jupyter" ] || { echo "Jupyter is missing: run scripts/setup-notebooks.sh" >&2; exit 1; }
export JUPYTER_PATH="$repo"
export XINC_GOLDEN="${XINC_GOLDEN:-$(cd "$repo/.." && pwd)/shared/golden}"
# Everything the notebooks compile is in the lock file and the local registry cache: fetch it
# now, then forbid the network while they run.
(cd "$repo" && cargo fetch --locked --quiet)
export CARGO_NET_OFFLINE=true

check_pages="${XINC_CHECK_PAGES:-auto}"
if [ "$check_pages" = auto ]; then
  check_pages=0
  for b in "${CHROMIUM:-}" chromium chromium-browser google-chrome; do
    [ -n "$b" ] && command -v "$b" >/dev/null && { check_pages=1; break; }
  done
  [ "$check_pages" = 1 ] || echo "note: no Chromium here: the HTML exports are not checked in a browser (scripts/check-pages.py)"
fi

mkdir -p "$out"
if [ "$#" -gt 0 ]; then notebooks=("$@"); else notebooks=("$repo"/notebooks/*.ipynb); fi
printf 'notebook\tseconds\n' > "$out/timings.tsv"
total_start=$(date +%s)
# One notebook: executed, checked, exported to HTML, checked in the browser; its time appended
# to timings.tsv.
run_one() {
  local nb="$1" name start seconds
  name="$(basename "$nb" .ipynb)"
  start=$(date +%s)
  # nbclient runs in the notebook's folder, so `:dep xinc = { path = ".." }` finds the crate.
  # Errors are kept in the executed copy (for reading) and failed on by check-notebook.py.
  "$venv/bin/jupyter" nbconvert --to notebook --execute \
    --ExecutePreprocessor.kernel_name=rust \
    --ExecutePreprocessor.allow_errors=True \
    --ExecutePreprocessor.timeout="$timeout" \
    --output-dir "$out" --output "$name" "$nb"
  seconds=$(( $(date +%s) - start ))
  "$venv/bin/python" "$repo/scripts/check-notebook.py" "$out/$name.ipynb"
  # nbconvert's template loads require.js and MathJax from a CDN: offline, two failed loads (the
  # notebooks need neither: plotly.js is inlined and sets window.Plotly, there is no LaTeX), so
  # both URLs are an empty script, which loads nothing.
  "$venv/bin/jupyter" nbconvert --to html --log-level=WARN \
    --HTMLExporter.require_js_url=data:text/javascript, \
    --HTMLExporter.mathjax_url=data:text/javascript, \
    --output-dir "$out" "$out/$name.ipynb"
  if [ "$check_pages" = 1 ]; then
    "$venv/bin/python" "$repo/scripts/check-pages.py" --min-figures 1 "$out/$name.html"
  fi
  printf '%s\t%s\n' "$name" "$seconds" >> "$out/timings.tsv"
  echo "   $name: ${seconds} s"
}
# Runs run_one in the background with its output in $out/<name>.log.
start_one() {
  local name
  name="$(basename "$1" .ipynb)"
  echo "== $name (started $(date +%T))"
  run_one "$1" > "$out/$name.log" 2>&1 &
  names[$!]="$name"
}
# Waits for one background notebook, prints its log, and fails when it failed.
finish_one() {
  local pid name rc=0
  wait -n -p pid || rc=$?
  name="${names[$pid]}"
  unset "names[$pid]"
  echo "== $name (ended $(date +%T))"
  cat "$out/$name.log"
  [ "$rc" = 0 ] || { echo "notebook $name failed (exit $rc)"; exit "$rc"; }
}
jobs_max="${XINC_NOTEBOOK_JOBS:-2}"
declare -a names=()
# The warm-up notebook: one cell, `:dep xinc` with the repository's canonical path (evcxr
# canonicalises the notebooks' `..` to the same path, so both build the same xinc).
warmup="$out/.warmup.ipynb"
printf '%s' '{"cells": [{"cell_type": "code", "execution_count": null, "id": "w", "metadata": {},
  "outputs": [], "source": [":dep xinc = { path = \"'"$(cd "$repo" && pwd -P)"'\" }"]}],
 "metadata": {"kernelspec": {"display_name": "Rust (xinc)", "language": "rust", "name": "rust"}},
 "nbformat": 4, "nbformat_minor": 5}' > "$warmup"
echo "== warm-up: a kernel loads xinc ($(date +%T))"
"$venv/bin/jupyter" nbconvert --to notebook --execute --log-level=WARN \
  --ExecutePreprocessor.kernel_name=rust --ExecutePreprocessor.timeout="$timeout" \
  --output-dir "$out" --output .warmup.out "$warmup"
"$venv/bin/python" "$repo/scripts/check-notebook.py" --no-figures "$out/.warmup.out.ipynb"
echo "   warm-up: $(( $(date +%s) - total_start )) s"
for nb in "${notebooks[@]}"; do
  while [ "${#names[@]}" -ge "$jobs_max" ]; do finish_one; done
  start_one "$nb"
done
while [ "${#names[@]}" -gt 0 ]; do finish_one; done
echo "== every notebook ran in $(( $(date +%s) - total_start )) s: $out"

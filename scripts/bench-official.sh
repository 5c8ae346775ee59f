#!/usr/bin/env bash
# Side-by-side benchmark: the official XINC code (PyTorch on the CPU, 1 and 2 threads) against
# xinc's criterion benches, on the same machine, in one run; prints a Markdown ratio table.
# See usage() below. Needs cargo, python3 (with venv and pip), git and /usr/bin/time (GNU).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/bench-official.sh [options]      (run from anywhere; works in the repo root)

Times the official XINC code (github:namithap10/xinc, pinned commit cc4bccc6…) with torch on
the CPU, then runs xinc's criterion benches (`cargo bench --bench nerv`, `--bench canvas`) and
`/usr/bin/time -v xinc canvas --layers block1 --summary`, and prints the ratio table.

  1. Python: a throwaway venv (default ${TMPDIR:-/tmp}/xinc-bench-venv, removed at the end
     unless --keep-venv) with torch==2.15.0 (default PyPI wheel, run on the CPU), numpy,
     einops and safetensors; or an existing interpreter (--python).
  2. The official code: --official DIR, else the local mirror (pinned commit if present,
     else HEAD), else `git clone https://github.com/namithap10/xinc`; into a temp dir.
  3. scripts/reference/bench_official.py once per thread count (a fresh process each,
     OMP_NUM_THREADS/MKL_NUM_THREADS = N): FFN forward, all-layer maps, training step; NeRV
     forward, head / block 3 / 2 / 1 maps, training step. Golden weights from $XINC_GOLDEN
     (default ../shared/golden beside the repository; seeded random weights if absent).
     -> OUT/official-<N>t.json
  4. cargo bench --bench nerv --bench canvas (the table's benches, see --xinc-filter), then
     the peak RSS of `xinc canvas --layers block1 --summary` (/usr/bin/time -v). Both are
     compiled first, before step 1 (cargo build --release --bin xinc; cargo bench --no-run).
  5. scripts/reference/bench_table.py -> stdout, OUT/table.md, OUT/results.json.

Options:
  --out DIR            output folder (default target/bench-official; git-ignored)
  --python PATH        use this interpreter instead of a fresh venv (it needs torch, numpy,
                       einops, safetensors)
  --keep-venv          keep the venv (and reuse it next time if its torch version matches)
  --venv DIR           venv location (default ${TMPDIR:-/tmp}/xinc-bench-venv)
  --torch-version V    torch version for the venv (default 2.15.0)
  --torch-index URL    pip index for torch (default: PyPI; e.g.
                       https://download.pytorch.org/whl/cpu for a CPU-only wheel)
  --official DIR       an existing checkout of the official code (used read-only)
  --mirror GITDIR      a bare git mirror of the official repository (default
                       /work/.mirror/namithap10+xinc/repo if present; `none`: clone
                       $XINC_OFFICIAL_URL, default https://github.com/namithap10/xinc)
  --golden DIR         the golden folder (default $XINC_GOLDEN, else ../shared/golden)
  --threads "1 2"      official thread counts (default "1 2")
  --repeats N          timed calls per official call (default 5)
  --block1-repeats N   timed calls of the official block-1 call (default 3; 15-35 s each here)
  --train-warmup N     untimed warm-up training steps (default 3)
  --quick              smoke test: repeats 2, 5 training steps per block, no official
                       block-1 call, criterion --warm-up-time 1 --measurement-time 3
  --xinc-filter REGEX  criterion filter for both benches (default: the table's benches)
  --xinc-all           run every criterion bench of both files (no filter)
  --skip-official      do not run the official side (reuse OUT/official-*.json if present)
  --skip-xinc          do not run cargo bench nor the xinc RSS measurement
  -h, --help           this text

Environment: CARGO_TARGET_DIR, CARGO_BUILD_TARGET and CRITERION_HOME are honoured;
OMP_WAIT_POLICY etc. are passed through to the official runs (recorded in the JSON).
A full run takes about 20-30 minutes on a 2-core machine (official side 8-15: the block-1
call alone is 15-35 s, run 4 times per thread count, with a 12 GB peak; criterion 8-12), plus
the venv's torch download (~2 min) and any cargo build; --quick --skip-xinc about 2 minutes.
EOF
}

die() { echo "bench-official: error: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$script_dir/.." && pwd)"
cd "$repo"

PINNED=cc4bccc65695c3b661e0388c585aa84c75fd090d
OFFICIAL_URL="${XINC_OFFICIAL_URL:-https://github.com/namithap10/xinc}"
DEFAULT_FILTER='^(ffn_canvas_128x256_w104/(maps/all_layers|maps/all_layers_into_reused_buffers|forward_pass)|ffn_train_128x256_w104/train_20_steps|nerv_canvas_128x256/(forward|summary/[a-z0-9_]+|maps/[a-z0-9_]+)|nerv_train_128x256/.+)$'

out=target/bench-official
python=""
keep_venv=0
venv="${TMPDIR:-/tmp}/xinc-bench-venv"
torch_version=2.15.0
torch_index=""
official=""
mirror=""
golden="${XINC_GOLDEN:-$(cd "$repo/.." && pwd)/shared/golden}"
threads="1 2"
repeats=5
block1_repeats=3
train_warmup=3
quick=0
filter="$DEFAULT_FILTER"
skip_official=0
skip_xinc=0

need_arg() { [ $# -ge 2 ] || die "$1 needs a value (see -h)"; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --out) need_arg "$@"; out="$2"; shift 2 ;;
    --python) need_arg "$@"; python="$2"; shift 2 ;;
    --keep-venv) keep_venv=1; shift ;;
    --venv) need_arg "$@"; venv="$2"; shift 2 ;;
    --torch-version) need_arg "$@"; torch_version="$2"; shift 2 ;;
    --torch-index) need_arg "$@"; torch_index="$2"; shift 2 ;;
    --official) need_arg "$@"; official="$2"; shift 2 ;;
    --mirror) need_arg "$@"; mirror="$2"; shift 2 ;;
    --golden) need_arg "$@"; golden="$2"; shift 2 ;;
    --threads) need_arg "$@"; threads="$2"; shift 2 ;;
    --repeats) need_arg "$@"; repeats="$2"; shift 2 ;;
    --block1-repeats) need_arg "$@"; block1_repeats="$2"; shift 2 ;;
    --train-warmup) need_arg "$@"; train_warmup="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --xinc-filter) need_arg "$@"; filter="$2"; shift 2 ;;
    --xinc-all) filter=""; shift ;;
    --skip-official) skip_official=1; shift ;;
    --skip-xinc) skip_xinc=1; shift ;;
    *) die "unknown option '$1' (see -h)" ;;
  esac
done

for n in $threads; do [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "--threads: '$n' is not a positive integer"; done
for v in "$repeats" "$block1_repeats"; do [[ "$v" =~ ^[1-9][0-9]*$ ]] || die "repeat counts must be positive integers"; done
[[ "$train_warmup" =~ ^[0-9]+$ ]] || die "--train-warmup must be a non-negative integer"
command -v python3 >/dev/null || die "python3 not found"
command -v git >/dev/null || die "git not found"
if [ "$skip_xinc" = 0 ]; then
  command -v cargo >/dev/null || die "cargo not found"
  [ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) not found: apt-get install time"
fi

ffn_steps=20
nerv_steps=10
skip_calls=""
crit_args=()
if [ "$quick" = 1 ]; then
  repeats=2
  ffn_steps=5
  nerv_steps=5
  skip_calls=nerv_block1
  crit_args=(--warm-up-time 1 --measurement-time 3)
fi

mkdir -p "$out"
out="$(cd "$out" && pwd)"
case "$out/" in
  "$repo"/*)
    git check-ignore -q "$out" || die "--out $out is inside the repository but not git-ignored" ;;
esac

tmp="$(mktemp -d "${TMPDIR:-/tmp}/xinc-bench.XXXXXX")"
created_venv=0
cleanup() {
  rc=$?
  rm -rf "$tmp"
  if [ "$created_venv" = 1 ] && [ "$keep_venv" = 0 ]; then
    say "removing the venv $venv"
    rm -rf "$venv"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the repository or the official checkout
started=$(date +%s)

# ---------------------------------------------------------------- 0. xinc build
# Compiled first, so that the measurements (official, then xinc) follow each other closely
# and a broken build fails before the long official runs.
if [ "$skip_xinc" = 0 ]; then
  if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    target_dir="$CARGO_TARGET_DIR"
  else
    target_dir="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')" ||
      target_dir="$repo/target"
  fi
  case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
  criterion_dir="${CRITERION_HOME:-$target_dir/criterion}"
  say "building xinc: cargo build --release --bin xinc; cargo bench --no-run --bench nerv --bench canvas"
  cargo build --release --bin xinc || die "cargo build --release failed"
  cargo bench --no-run --bench nerv --bench canvas || die "cargo bench --no-run failed"
  xinc="$target_dir/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}release/xinc"
  [ -x "$xinc" ] || xinc="$target_dir/release/xinc"
  [ -x "$xinc" ] || die "release binary not found under $target_dir"
fi

# ---------------------------------------------------------------- 1. Python
py_ok() {  # the interpreter has what bench_official.py imports
  "$1" -c 'import torch, numpy, einops, safetensors' >/dev/null 2>&1
}
if [ "$skip_official" = 0 ]; then
  if [ -n "$python" ]; then
    [ -x "$python" ] || python="$(command -v "$python" || true)"
    [ -n "$python" ] && [ -x "$python" ] || die "--python: not an executable"
    py_ok "$python" || die "--python $python lacks one of torch, numpy, einops, safetensors"
  else
    python="$venv/bin/python"
    # Only a venv made by this script (marker file) is reused or deleted; any other existing
    # folder is left alone.
    [ ! -e "$venv" ] || [ -f "$venv/.xinc-bench-venv" ] ||
      die "$venv exists but was not made by this script; choose another --venv (or --python)"
    if [ -x "$python" ] && py_ok "$python" &&
       [ "$("$python" -c 'import torch; print(torch.__version__.split("+")[0])')" = "$torch_version" ]; then
      say "reusing the venv $venv"
      created_venv=1  # removed at the end unless --keep-venv, as a fresh one would be
    else
      say "creating a venv in $venv and installing torch==$torch_version numpy einops safetensors (may take minutes)"
      rm -rf "$venv"  # ours (marker checked above), with the wrong torch or broken
      created_venv=1
      python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
      touch "$venv/.xinc-bench-venv"
      pip_torch=("torch==$torch_version")
      [ -z "$torch_index" ] || pip_torch+=(--index-url "$torch_index")
      "$venv/bin/python" -m pip install --quiet "${pip_torch[@]}" ||
        die "pip install torch==$torch_version failed"
      "$venv/bin/python" -m pip install --quiet numpy einops safetensors ||
        die "pip install numpy einops safetensors failed"
      py_ok "$python" || die "the venv cannot import torch, numpy, einops, safetensors"
    fi
  fi
  say "python: $python ($("$python" -c 'import torch; print("torch", torch.__version__)'))"
fi

# ---------------------------------------------------------------- 2. the official code
commit=""
if [ "$skip_official" = 0 ]; then
  if [ -n "$official" ]; then
    [ -d "$official/HNeRV" ] && [ -d "$official/image_inr" ] ||
      die "--official $official has no HNeRV/ and image_inr/"
    official="$(cd "$official" && pwd)"
    commit="$(git -C "$official" rev-parse HEAD 2>/dev/null || echo "unknown (--official $official)")"
  else
    if [ -z "$mirror" ] && [ -d /work/.mirror/namithap10+xinc/repo ]; then
      mirror=/work/.mirror/namithap10+xinc/repo
    fi
    [ "$mirror" != none ] || mirror=""
    official="$tmp/official"
    mkdir -p "$official"
    if [ -n "$mirror" ]; then
      g=(git --git-dir="$mirror")
      if "${g[@]}" cat-file -e "$PINNED^{commit}" 2>/dev/null; then commit=$PINNED
      else commit="$("${g[@]}" rev-parse HEAD)"; say "pinned commit absent from the mirror, using HEAD $commit"; fi
      say "extracting the official code ($commit) from $mirror"
      # File by file: the mirror lacks a few blobs (a checkpoint, a notebook), which makes
      # `git archive` fail; only the two code folders are needed.
      n=0
      while IFS=$'\t' read -r meta path; do
        blob="${meta##* }"
        if "${g[@]}" cat-file -e "$blob" 2>/dev/null; then
          mkdir -p "$official/$(dirname "$path")"
          "${g[@]}" cat-file blob "$blob" >"$official/$path"
          n=$((n + 1))
        fi
      done < <("${g[@]}" ls-tree -r "$commit" -- HNeRV image_inr)
      [ "$n" -gt 0 ] || die "nothing extracted from $mirror"
    else
      say "cloning $OFFICIAL_URL"
      git clone --quiet --filter=blob:none --no-checkout "$OFFICIAL_URL" "$official" ||
        die "git clone $OFFICIAL_URL failed (use --official DIR)"
      if git -C "$official" cat-file -e "$PINNED^{commit}" 2>/dev/null; then commit=$PINNED
      else commit="$(git -C "$official" rev-parse HEAD)"; say "pinned commit not found, using HEAD $commit"; fi
      git -C "$official" checkout --quiet "$commit" -- HNeRV image_inr ||
        die "git checkout of the official code failed"
    fi
  fi
  [ -f "$official/HNeRV/get_mappings.py" ] && [ -f "$official/image_inr/get_mlp_mappings.py" ] ||
    die "the official code in $official lacks get_mappings.py / get_mlp_mappings.py"
fi

# ---------------------------------------------------------------- 3. official timings
if [ "$skip_official" = 0 ]; then
  [ -d "$golden/ffn_0005" ] && [ -d "$golden/nerv_synth" ] ||
    say "WARNING: golden folder $golden absent: the official models get seeded random weights"
  rm -f "$out"/official-*t.json
  for n in $threads; do
    say "official code, $n thread(s)"
    OMP_NUM_THREADS=$n MKL_NUM_THREADS=$n "$python" "$repo/scripts/reference/bench_official.py" \
      --official "$official" --golden "$golden" --threads "$n" --repeats "$repeats" \
      --block1-repeats "$block1_repeats" --train-warmup "$train_warmup" \
      --ffn-train-steps "$ffn_steps" --nerv-train-steps "$nerv_steps" \
      --skip "$skip_calls" --commit "$commit" --out "$out/official-${n}t.json" ||
      die "the official benchmark failed ($n thread(s))"
  done
else
  say "skipping the official side (reusing $(ls "$out"/official-*t.json 2>/dev/null | tr '\n' ' ' || true))"
fi

# ---------------------------------------------------------------- 4. xinc
table_args=()
if [ "$skip_xinc" = 0 ]; then
  touch "$tmp/xinc-start"
  sleep 1  # estimates written after this second are this run's
  bench_args=()
  [ -z "$filter" ] || bench_args+=("$filter")
  bench_args+=("${crit_args[@]}")
  say "cargo bench --bench nerv --bench canvas -- ${bench_args[*]}"
  cargo bench --bench nerv --bench canvas -- "${bench_args[@]}" || die "cargo bench failed"

  say "/usr/bin/time -v $xinc canvas --model checkpoints/nerv_cityscapes_vps_0005 --layers block1 --summary"
  rc=0
  /usr/bin/time -v -o "$out/xinc-block1-time.txt" "$xinc" canvas \
    --model checkpoints/nerv_cityscapes_vps_0005 --layers block1 --summary \
    --out "$tmp/b1.safetensors" >"$tmp/b1.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    cat "$tmp/b1.log" >&2
    say "WARNING: xinc canvas exited with $rc; the RSS row is marked failed"
  fi
  grep -E "Maximum resident set size|Elapsed \(wall" "$out/xinc-block1-time.txt" >&2 || true
  table_args+=(--criterion "$criterion_dir" --since "$tmp/xinc-start" --xinc-time "$out/xinc-block1-time.txt")
else
  table_args+=(--xinc-skipped)
fi

# ---------------------------------------------------------------- 5. the table
notes=()
[ "$quick" = 0 ] || notes+=(--note "QUICK smoke run: official repeats 2, no official block-1 call, criterion --warm-up-time 1 --measurement-time 3; not for quoting")
[ -z "$filter" ] || [ "$filter" = "$DEFAULT_FILTER" ] || notes+=(--note "criterion filter: $filter")
say "table (total $(( $(date +%s) - started )) s)"
echo
python3 "$repo/scripts/reference/bench_table.py" --out "$out" --threads "$threads" \
  "${table_args[@]}" "${notes[@]}"
echo
say "wrote $out/table.md and $out/results.json"

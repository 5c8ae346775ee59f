#!/usr/bin/env bash
# `xinc batch` as a Slurm array job on a real one-node cluster (what .ci/run runs):
#
#   bash scripts/slurm/batch-ci.sh path/to/xinc     # exit 0 PASS, 1 FAIL, 3 SKIP (no Slurm possible)
#
# 1. Brings the local cluster up (local-cluster.sh; its exit 3 is passed on as a skip).
# 2. Generates three small synthetic clips (two Cityscapes-VPS, one VIPSeg), a manifest and a
#    batch.toml that trains a tiny NeRV per video.
# 3. Runs the 3-task array; checks every expected partition exists exactly once (4 layers ×
#    3 videos of part-0.parquet, one record per video) and no temporary file is left.
# 4. Kill + resubmit: a fresh run whose task 1 is cancelled mid-task, then the whole array
#    resubmitted; the partitions must be exactly those of step 3, finished ones not rewritten.
# 5. `xinc stats` queries the result lazily across the videos.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
XINC="$(realpath "${1:?usage: batch-ci.sh path/to/xinc}")"
TIMEOUT_S="${BATCH_CI_TIMEOUT_S:-600}"

bash "$HERE/local-cluster.sh" start; rc=$?
[ $rc = 3 ] && { echo "SKIP: slurm batch test (no Slurm cluster could be started)"; exit 3; }
[ $rc = 0 ] || { echo "FAIL: local-cluster.sh start exited $rc"; exit 1; }
trap 'bash "$HERE/local-cluster.sh" stop >/dev/null 2>&1' EXIT

T="$(mktemp -d /tmp/xinc-batch-ci.XXXXXX)"
fail() { echo "FAIL: $*"; for f in "$T"/logs/*; do echo "== $f"; tail -n 5 "$f"; done; exit 1; }
mkdir -p "$T/logs"
"$XINC" synth --format cityscapes-vps --frames 6 --size 64x128 --seed 1 --video 0001 --out "$T/city1" >/dev/null || fail synth
"$XINC" synth --format cityscapes-vps --frames 6 --size 64x128 --seed 2 --video 0002 --out "$T/city2" >/dev/null || fail synth
"$XINC" synth --format vipseg --frames 6 --size 64x128 --seed 3 --out "$T/vipseg" >/dev/null || fail synth
printf 'city1\ncity2#0002\nvipseg\n' >"$T/manifest.txt"
cat >"$T/batch.toml" <<'EOF'
dataset = "synthetic"
motion_frames = [1]
groups = 3
[nerv]
args = "--embed pe_1.25_8 --fc_hw 2_4 --dec_strds 4 2 2 --ks 0_3_3 --reduce 1.2 --modelsize 0.003 --lower_width 4"
epochs = 40
eval_every = 10
EOF

submit() {  # submit STATS_DIR -> array job id
  sbatch --parsable --array=0-2 --output="$T/logs/xinc-%A_%a.out" \
    --export="ALL,XINC_BIN=$XINC,XINC_MANIFEST=$T/manifest.txt,XINC_STATS=$1,XINC_CONFIG=$T/batch.toml" \
    "$HERE/xinc-array.sbatch" | cut -d';' -f1
}
wait_job() {
  local end=$((SECONDS + TIMEOUT_S))
  while [ -n "$(timeout 10 squeue -h -j "$1" -o %i 2>/dev/null)" ]; do
    [ $SECONDS -lt $end ] || { scancel "$1"; fail "job $1 still queued after ${TIMEOUT_S}s"; }
    sleep 1
  done
}
listing() { (cd "$1" && find . -name '*.parquet' -o -name '*.json' -path './_done/*' | sort); }
check() {  # check STATS_DIR
  local n
  n="$(find "$1" -name part-0.parquet | wc -l)"
  [ "$n" = 12 ] || fail "$1: $n per-neuron partitions, want 12 (4 layers x 3 videos)"
  n="$(find "$1/_done" -name '*.json' | wc -l)"
  [ "$n" = 3 ] || fail "$1: $n task records, want 3"
  [ -z "$(find "$1" -name '*.tmp')" ] || fail "$1: temporary files left: $(find "$1" -name '*.tmp')"
  n="$(find "$1" -name part-0.parquet | sed 's|/part-0.parquet||' | sort | uniq -d | wc -l)"
  [ "$n" = 0 ] || fail "$1: duplicate partitions"
}

t0=$SECONDS
j="$(submit "$T/stats1")"; [ -n "$j" ] || fail "sbatch failed"
wait_job "$j"
check "$T/stats1"
echo "ok: array job $j ran 3 xinc batch tasks in $((SECONDS - t0))s ($(listing "$T/stats1" | wc -l) files)"

j="$(submit "$T/stats2")"; [ -n "$j" ] || fail "sbatch failed"
end=$((SECONDS + TIMEOUT_S))
until grep -qs 'xinc task' "$T/logs/xinc-${j}_1.out"; do
  [ $SECONDS -lt $end ] || fail "task ${j}_1 never started"; sleep 0.2
done
sleep 2
scancel "${j}_1" || fail "scancel ${j}_1"
wait_job "$j"
if [ -z "$(find "$T/stats2/_done" -name "*0002*" 2>/dev/null)" ]; then
  echo "ok: cancelled ${j}_1 mid-task ($(find "$T/stats2" -name part-0.parquet | wc -l) per-neuron partitions before the resubmit)"
else
  echo "note: task 1 finished before the cancel"
fi
before="$(cd "$T/stats2" && find dataset=* -path '*video=0001*' -name '*.parquet' -exec stat -c '%n %Y' {} + | sort)"
sleep 1
j2="$(submit "$T/stats2")"; [ -n "$j2" ] || fail "resubmit failed"
wait_job "$j2"
check "$T/stats2"
[ "$(listing "$T/stats1")" = "$(listing "$T/stats2")" ] || fail "resubmitted run differs from a clean one"
after="$(cd "$T/stats2" && find dataset=* -path '*video=0001*' -name '*.parquet' -exec stat -c '%n %Y' {} + | sort)"
[ "$before" = "$after" ] || fail "finished partitions were rewritten on resubmit"
grep -q 'already done' "$T/logs/xinc-${j2}_0.out" || fail "resubmitted task 0 did not skip"
echo "ok: resubmit $j2 completed the dataset: same partitions as a clean run, none rewritten"

"$XINC" stats --dir "$T/stats2" >"$T/stats.txt" || fail "xinc stats"
grep -q '^3 videos' "$T/stats.txt" || fail "xinc stats: $(head -3 "$T/stats.txt")"
head -12 "$T/stats.txt"
echo "PASS: xinc batch on Slurm ($T)"

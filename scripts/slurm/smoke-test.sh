#!/usr/bin/env bash
# Smoke test of scripts/slurm/xinc-array.sbatch on a local one-node Slurm cluster:
#
#   bash scripts/slurm/smoke-test.sh          # exit 0 PASS, 1 FAIL, 3 SKIP (no Slurm possible)
#
# 1. Brings the cluster up (local-cluster.sh start; its exit 3 is passed on as a skip).
# 2. Runs a 3-task array; checks that task=0..2/part-0.parquet each exist exactly once.
# 3. Kill + resubmit: runs the array again into a fresh directory with slow tasks, cancels task 1
#    while it runs, resubmits the whole array, and checks that every partition exists exactly
#    once, no .tmp file remains, and finished partitions were not rewritten.
# XINC_BIN (a real `xinc` with `batch`) replaces the stand-in; XINC_MANIFEST then gives its
# manifest (3 lines at least). The stand-in writes part-0.parquet.tmp, sleeps STANDIN_SLEEP
# seconds, then renames it, and skips a task whose part-0.parquet exists. The cluster is left
# running; stop it with local-cluster.sh stop.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
TIMEOUT_S="${SMOKE_TIMEOUT_S:-120}"

bash "$HERE/local-cluster.sh" start; rc=$?
[ $rc = 3 ] && { echo "SKIP: smoke test (no Slurm cluster)"; exit 3; }
[ $rc = 0 ] || { echo "FAIL: local-cluster.sh start exited $rc"; exit 1; }

T="$(mktemp -d /tmp/xinc-slurm-smoke.XXXXXX)"
fail() { echo "FAIL: $*"; echo "logs: $T/logs"; tail -n 3 "$T"/logs/* 2>/dev/null; exit 1; }

# The stand-in for `xinc batch`: parses the same arguments, writes manifest line I atomically.
cat >"$T/xinc-standin" <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
[ "$1" = batch ] || { echo "stand-in: only 'batch'" >&2; exit 2; }; shift
while [ $# -gt 0 ]; do
  case "$1" in
    --manifest) m="$2" ;; --task-index) i="$2" ;; --out) o="$2" ;; --config|--device) ;;
    *) echo "stand-in: unknown $1" >&2; exit 2 ;;
  esac; shift 2
done
d="$o/task=$i"
[ -e "$d/part-0.parquet" ] && { echo "task $i: already done, skipped"; exit 0; }
mkdir -p "$d"
sed -n "$((i + 1))p" "$m" >"$d/part-0.parquet.tmp"
sleep "${STANDIN_SLEEP:-0}"
mv "$d/part-0.parquet.tmp" "$d/part-0.parquet"
echo "task $i: wrote $d/part-0.parquet"
EOF
chmod +x "$T/xinc-standin"
BIN="${XINC_BIN:-$T/xinc-standin}"
MANIFEST="${XINC_MANIFEST:-$T/manifest.txt}"
[ -n "${XINC_MANIFEST:-}" ] || printf 'sample-a\nsample-b\nsample-c\n' >"$MANIFEST"
mkdir -p "$T/logs"

# submit STATS_DIR SLEEP -> prints the array job id
submit() {
  sbatch --parsable --array=0-2 --output="$T/logs/xinc-%A_%a.out" \
    --export="ALL,XINC_BIN=$BIN,XINC_MANIFEST=$MANIFEST,XINC_STATS=$1,STANDIN_SLEEP=$2" \
    "$HERE/xinc-array.sbatch" | cut -d';' -f1
}
# wait_job ID: until squeue no longer lists it (no accounting storage, so no sacct)
wait_job() {
  local end=$((SECONDS + TIMEOUT_S))
  while [ -n "$(timeout 10 squeue -h -j "$1" -o %i 2>/dev/null)" ]; do
    [ $SECONDS -lt $end ] || { scancel "$1"; fail "job $1 still queued after ${TIMEOUT_S}s"; }
    sleep 1
  done
}
# check STATS_DIR: exactly one part-0.parquet per task 0..2, nothing else, no .tmp
check() {
  local n i
  n="$(find "$1" -name 'part-0.parquet' | wc -l)"
  [ "$n" = 3 ] || fail "$1: $n partitions, want 3: $(find "$1" -type f | tr '\n' ' ')"
  for i in 0 1 2; do [ -s "$1/task=$i/part-0.parquet" ] || fail "$1: task=$i missing or empty"; done
  [ -z "$(find "$1" -name '*.tmp')" ] || fail "$1: leftover .tmp: $(find "$1" -name '*.tmp')"
}

# 1. A plain 3-task array.
t0=$SECONDS
j="$(submit "$T/stats1" 0)"; [ -n "$j" ] || fail "sbatch failed"
wait_job "$j"
check "$T/stats1"
echo "ok: array job $j ran 3 tasks in $((SECONDS - t0))s -> $T/stats1"

# 2. Kill task 1 mid-run, then resubmit the whole array.
j="$(submit "$T/stats2" 4)"; [ -n "$j" ] || fail "sbatch failed"
end=$((SECONDS + TIMEOUT_S))
# Squeue says R before the script starts, so wait for the task's own output: the stand-in's
# .tmp file (a real xinc: its log header, then 1 s).
started() {
  if [ -n "${XINC_BIN:-}" ]; then grep -qs 'xinc task' "$T/logs/xinc-${j}_1.out" && sleep 1
  else [ -e "$T/stats2/task=1/part-0.parquet.tmp" ]; fi
}
until started; do [ $SECONDS -lt $end ] || fail "task ${j}_1 never started"; sleep 0.2; done
scancel "${j}_1" || fail "scancel ${j}_1"
wait_job "$j"
if [ -e "$T/stats2/task=1/part-0.parquet" ]; then
  [ -n "${XINC_BIN:-}" ] || fail "cancel of task 1 did not land mid-task"
  echo "note: task 1 finished before the cancel"
else
  echo "ok: cancelled ${j}_1 mid-task (left: $(cd "$T/stats2" && find . -type f | sort | tr '\n' ' '))"
fi
before="$(stat -c '%n %Y' "$T"/stats2/task=[02]/part-0.parquet)"
sleep 1                                  # so a rewrite would change the mtime
j2="$(submit "$T/stats2" 1)"; [ -n "$j2" ] || fail "resubmit failed"
wait_job "$j2"
check "$T/stats2"
[ "$before" = "$(stat -c '%n %Y' "$T"/stats2/task=[02]/part-0.parquet)" ] ||
  fail "finished partitions were rewritten on resubmit"
grep -q 'already done' "$T/logs/xinc-${j2}_0.out" || [ -n "${XINC_BIN:-}" ] ||
  fail "resubmitted task 0 did not skip"
echo "ok: resubmit $j2 completed the array; partitions: $(cd "$T/stats2" && find . -type f | sort | tr '\n' ' ')"
echo "PASS: slurm smoke test ($T)"

#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (loopback), for testing `xinc batch` array jobs.
#
#   bash scripts/slurm/local-cluster.sh start    # install if missing, configure, start, wait idle
#   bash scripts/slurm/local-cluster.sh status   # daemons + sinfo; exit 0 when all three run, 1 otherwise
#   bash scripts/slurm/local-cluster.sh stop     # stop slurmd, slurmctld and munged
#
# Needs root and Debian (apt-get install slurm-wlm munge, skipped when present). Settings follow
# shared/docs/slurm-notes.md: munge auth, proctrack/linuxproc, task/none, no cgroup plugins (no
# cgroup delegation in the sandbox), no accounting. Config is /etc/slurm/slurm.conf (where the
# Debian daemons and clients look); state, spool, pid and log files live in $XINC_SLURM_DIR
# (default /var/lib/xinc-slurm). `start` is idempotent: a running cluster with the same config is
# left alone. When Slurm cannot be brought up it prints `SKIP: <reason>` and exits 3.
set -uo pipefail

DIR="${XINC_SLURM_DIR:-/var/lib/xinc-slurm}"
CONF=/etc/slurm/slurm.conf
HOST="$(hostname -s 2>/dev/null || uname -n)"; HOST="${HOST%%.*}"
WAIT_S="${XINC_SLURM_WAIT_S:-60}"

skip() { echo "SKIP: $*"; exit 3; }
# pid file -> running? Zombies count as dead: daemons reparented to a pid 1 that never reaps
# them (sandboxes) stay as <defunct> entries that `kill -0` still accepts.
alive() {
  local p; p="$(cat "$1" 2>/dev/null)" && [ -n "$p" ] && kill -0 "$p" 2>/dev/null &&
    ! grep -q '^[0-9]* (.*) Z' "/proc/$p/stat" 2>/dev/null
}
node_state() { timeout 10 sinfo -h -N -n "$HOST" -o %t 2>/dev/null | head -n1; }
MUNGE_PID=/run/munge/munged.pid

install_pkgs() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
    command -v sbatch >/dev/null && command -v munged >/dev/null && return 0
  command -v apt-get >/dev/null || skip "slurm/munge missing and apt-get unavailable"
  export DEBIAN_FRONTEND=noninteractive
  # Try without refreshing the package lists first; refresh once if that fails.
  timeout 900 apt-get install -y -q slurm-wlm munge >"$DIR/apt.log" 2>&1 ||
    { timeout 300 apt-get update -q >>"$DIR/apt.log" 2>&1 &&
      timeout 900 apt-get install -y -q slurm-wlm munge >>"$DIR/apt.log" 2>&1; } ||
    skip "apt-get install slurm-wlm munge failed (see $DIR/apt.log)"
}

write_conf() {
  # CPUs and memory as slurmd itself detects them; RealMemory must not exceed what slurmd sees
  # or the node is drained, so keep 5% slack.
  local c cpus mem
  c="$(timeout 10 slurmd -C 2>/dev/null | head -n1)"
  cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$c")"; cpus="${cpus:-$(nproc)}"
  mem="$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$c")"
  mem="${mem:-$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)}"; mem=$((mem * 95 / 100))
  mkdir -p /etc/slurm
  cat >"$CONF.new" <<EOF
# Written by scripts/slurm/local-cluster.sh: a one-node test cluster on loopback.
ClusterName=xinc
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  # No cgroup plugin is configured; this file only documents that (22.05 reads it if present).
  [ -f /etc/slurm/cgroup.conf ] || echo "# unused: proctrack/linuxproc + task/none (no cgroups)" \
    >/etc/slurm/cgroup.conf
  if cmp -s "$CONF.new" "$CONF"; then rm -f "$CONF.new"; return 1; fi   # 1 = unchanged
  mv "$CONF.new" "$CONF"
}

start_munge() {
  alive "$MUNGE_PID" && return 0
  getent passwd munge >/dev/null || skip "no munge user (munge package incomplete)"
  mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge: /etc/munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
  chmod 0400 /etc/munge/munge.key; chmod 0700 /etc/munge
  runuser -u munge -- munged --force || skip "munged failed to start (see /var/log/munge/munged.log)"
}

stop_slurm() {
  timeout 10 scontrol shutdown >/dev/null 2>&1
  local f i
  for f in "$DIR/run/slurmd.pid" "$DIR/run/slurmctld.pid"; do
    for i in $(seq 20); do alive "$f" || break; sleep 0.5; done
    alive "$f" && kill "$(cat "$f")" 2>/dev/null
    rm -f "$f"
  done
  return 0
}

summary() {
  echo "slurm up: node $HOST $(node_state), partition debug, $(grep -o 'CPUs=[0-9]* RealMemory=[0-9]*' "$CONF"), conf $CONF, state $DIR, ${SECONDS}s"
}

cmd_start() {
  [ "$(id -u)" = 0 ] || skip "not root (local-cluster.sh must run as root)"
  mkdir -p "$DIR"/{state,spool,run,log} || skip "cannot create $DIR"
  install_pkgs
  # A changed config (other CPUs/memory) needs a restart of the Slurm daemons.
  if write_conf && { alive "$DIR/run/slurmctld.pid" || alive "$DIR/run/slurmd.pid"; }; then
    stop_slurm
  fi
  start_munge
  timeout 10 bash -c 'munge -n | unmunge' >/dev/null 2>&1 || skip "munge does not answer"
  alive "$DIR/run/slurmctld.pid" || slurmctld || skip "slurmctld failed (see $DIR/log/slurmctld.log)"
  alive "$DIR/run/slurmd.pid" || slurmd || skip "slurmd failed (see $DIR/log/slurmd.log)"
  local st end=$((SECONDS + WAIT_S))
  while [ $SECONDS -lt $end ]; do
    st="$(node_state)"
    case "$st" in
      idle|mix|mixed|alloc|allocated|comp|completing) summary; return 0 ;;
      down*|drain*|drng|fail*) timeout 10 scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 ;;
    esac
    sleep 1
  done
  tail -n 5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 2>/dev/null
  skip "node $HOST not idle after ${WAIT_S}s (state '${st:-no answer}')"
}

cmd_status() {
  local ok=0 f
  for f in "$MUNGE_PID" "$DIR/run/slurmctld.pid" "$DIR/run/slurmd.pid"; do
    if alive "$f"; then echo "$(basename "$f" .pid): running (pid $(cat "$f"))"
    else echo "$(basename "$f" .pid): stopped"; ok=1; fi
  done
  [ $ok = 0 ] && timeout 10 sinfo 2>&1
  return $ok
}

cmd_stop() {
  stop_slurm
  if alive "$MUNGE_PID"; then kill "$(cat "$MUNGE_PID")"; fi
  echo "slurm stopped"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

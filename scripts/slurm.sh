#!/usr/bin/env bash
# A real one-node SLURM on the loopback address, for the tests of `--executor slurm`.
#
#   scripts/slurm.sh up       install Debian's slurmctld/slurmd/slurm-client/munge when missing,
#                             write /etc/slurm/slurm.conf, start munged, slurmctld and slurmd, and
#                             wait until the node is idle (`make slurm-up`)
#   scripts/slurm.sh down     stop what `up` started and remove its files (`make slurm-down`)
#   scripts/slurm.sh status   daemons, `sinfo` and the queue
#
# Both `up` and `down` are idempotent. Needs root (re-runs itself under sudo otherwise).
# No accounting (no slurmdbd): `sacct` is installed but answers with an error, see README.
# State, spool, pid and log files live under $MTL_SLURM_DIR (default /tmp/mtl-bench-slurm);
# the only file written elsewhere is /etc/slurm/slurm.conf, where every client looks for it.
set -euo pipefail

DIR="${MTL_SLURM_DIR:-/tmp/mtl-bench-slurm}"
CONF=/etc/slurm/slurm.conf
MARK="# Written by mtl-bench scripts/slurm.sh"
PACKAGES=(slurmctld slurmd slurm-client munge)
PARTITION=local
WAIT_S="${MTL_SLURM_WAIT_S:-60}"   # how long `up` waits for each daemon before giving up
NODE="$(hostname -s)"

say() { echo "slurm.sh: $*"; }
die() { echo "slurm.sh: error: $*" >&2; exit 1; }

# live_pid PIDFILE NAME: the pid in PIDFILE, printed only while it is a live process called NAME
# (a stale file from a killed run may name a pid that some other process now has)
live_pid() {
  local pid
  [ -s "$1" ] || return 1
  pid="$(cat "$1")"
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Lists may be missing or stale on a fresh machine; an unreachable third-party source is not fatal.
  apt-get update -qq >/dev/null 2>&1 || say "apt-get update reported errors; trying the install anyway"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$DIR/apt.log" 2>&1 \
    || { tail -20 "$DIR/apt.log" >&2; die "apt-get install ${missing[*]} failed (log: $DIR/apt.log)"; }
}

# The NodeName line from `slurmd -C` (real CPUs, sockets, cores, threads, memory in MB).
node_line() {
  slurmd -C | head -1 | sed -e "s/^NodeName=[^ ]*/NodeName=$NODE NodeAddr=127.0.0.1/"
}

write_conf() {
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; refusing to overwrite another cluster's config"
  fi
  mkdir -p "$(dirname "$CONF")"
  cat >"$CONF.tmp" <<EOF
$MARK ($(date -u +%FT%TZ)): a one-node test cluster.
# \`make slurm-down\` removes it. Settings are the minimum for jobs from submitit on one machine.
ClusterName=mtlbench
# slurmctld refuses to start unless this name is the machine's short hostname.
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups: the machine may have no writable cgroup tree and no systemd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No accounting: no slurmdbd, so \`sacct\` fails; submitit falls back on its result files.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
# Cores are the consumable resource; --mem is checked against the node but not reserved.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Generous timeouts (seconds) before a silent daemon is declared down: the machine is small and
# shared. MessageTimeout stays at its default, since a client retries about 3x that long when
# no controller answers (what \`sinfo\` does after the daemons were killed).
SlurmctldTimeout=300
SlurmdTimeout=300
MessageTimeout=10
# Seconds between SIGTERM and SIGKILL on scancel or timeout. submitit's job process ignores
# SIGTERM (it waits for USR2 to checkpoint), so every cancel of a running job takes this long.
KillWait=5
InactiveLimit=0
# Keep finished jobs in \`squeue -t all\` / \`scontrol show job\` for an hour (seconds), since
# without accounting this is the only place a cancelled or timed-out job's state can be read.
MinJobAge=3600
ReturnToService=2
$(node_line) State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
}

start_munge() {
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0  # already answering: ours from an earlier `up`, or the machine's own
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    say "creating the munge key"
    runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
  fi
  # systemd's tmpfiles would create this; here nobody does. munged refuses a dir it does not own.
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1 \
    || fail "munged did not start"
  touch "$DIR/run/munged.ours"
}

start_slurmctld() {
  live_pid "$DIR/run/slurmctld.pid" slurmctld >/dev/null && return 0
  # -i: ignore unreadable state from a run that was killed rather than stopped
  setsid slurmctld -i </dev/null >>"$DIR/log/slurmctld.out" 2>&1 || fail "slurmctld did not start"
  wait_for "slurmctld to answer" scontrol ping
}

start_slurmd() {
  live_pid "$DIR/run/slurmd.pid" slurmd >/dev/null && return 0
  setsid slurmd -N "$NODE" </dev/null >>"$DIR/log/slurmd.out" 2>&1 || fail "slurmd did not start"
  wait_for "node $NODE to be idle" node_idle
}

node_idle() {
  [ "$(sinfo -h -n "$NODE" -o '%t' 2>/dev/null)" = idle ]
}

# wait_for WHAT CMD...: retry CMD every half second for $WAIT_S seconds
wait_for() {
  local what="$1" i
  shift
  for ((i = 0; i < WAIT_S * 2; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  fail "timed out after ${WAIT_S}s waiting for $what"
}

# Print why, with the end of every daemon log, then exit 1.
fail() {
  local f
  echo "slurm.sh: error: $*" >&2
  for f in "$DIR"/log/* /var/log/munge/munged.log; do
    [ -s "$f" ] || continue
    echo "----- last lines of $f -----" >&2
    tail -25 "$f" >&2
  done
  scontrol ping >/dev/null 2>&1 && sinfo -N -l >&2  # (sinfo retries ~30 s without a controller)
  exit 1
}

up() {
  mkdir -p "$DIR"/{state,spool,run,log}
  chmod 0755 "$DIR"
  install_packages
  # Rewriting the config under a running controller would leave the two disagreeing.
  live_pid "$DIR/run/slurmctld.pid" slurmctld >/dev/null || write_conf
  start_munge
  start_slurmctld
  start_slurmd
  say "up: node $NODE idle in partition $PARTITION ($(node_line | cut -d' ' -f3-))"
}

# Jobs outlive slurmd (each runs under its own slurmstepd), so cancel them all and wait (bounded)
# until none is left running; a running job takes KillWait seconds to go.
cancel_jobs() {
  local ids i
  live_pid "$DIR/run/slurmctld.pid" slurmctld >/dev/null || return 0
  mapfile -t ids < <(squeue --noheader --format=%F 2>/dev/null | sort -u)  # %F: an array's id
  [ ${#ids[@]} -gt 0 ] || return 0
  say "cancelling jobs ${ids[*]}"
  scancel --full "${ids[@]}" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do
    [ -z "$(squeue --noheader --format=%i 2>/dev/null)" ] && return 0
    sleep 0.5
  done
  say "jobs still listed after 30s: $(squeue --noheader --format='%i %T' | tr '\n' ' ')"
}

# stop NAME PIDFILE [NAME PIDFILE ...]: SIGTERM to each live one, wait up to 20 s, then SIGKILL
stop() {
  local pids=() pid i alive
  while [ $# -gt 0 ]; do
    pid="$(live_pid "$2" "$1")" && { kill "$pid" 2>/dev/null || true; pids+=("$pid"); }
    shift 2
  done
  for ((i = 0; i < 200; i++)); do
    alive=0
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
  say "killing ${pids[*]}: still alive 20s after SIGTERM"
  kill -9 "${pids[@]}" 2>/dev/null || true
}

down() {
  if [ -d "$DIR/run" ]; then
    cancel_jobs
    stop slurmd "$DIR/run/slurmd.pid" slurmctld "$DIR/run/slurmctld.pid"
    if [ -e "$DIR/run/munged.ours" ]; then
      stop munged /run/munge/munged.pid
    fi
  fi
  if [ -f "$CONF" ] && grep -qF "$MARK" "$CONF"; then
    rm -f "$CONF"
  fi
  rm -rf "$DIR"
  say "down"
}

status() {
  local name
  for name in slurmctld slurmd; do
    echo "$name: $(live_pid "$DIR/run/$name.pid" "$name" || echo 'not running')"
  done
  echo "munged: $(live_pid /run/munge/munged.pid munged || echo 'not running')"
  if ! scontrol ping >/dev/null 2>&1; then
    echo "controller: not reachable"
    return 1
  fi
  sinfo -N -l && squeue -t all
}

if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "needs root (or sudo)"
  exec sudo MTL_SLURM_DIR="$DIR" MTL_SLURM_WAIT_S="$WAIT_S" "$0" "$@"
fi

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac

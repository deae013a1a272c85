#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on this machine, for testing the workflow's SLURM profile
# for real (`make test-slurm`, tests/test_slurm.py).
#
#   slurm_cluster.sh start SCRATCH    install (apt) when missing, configure, start, wait until idle
#   slurm_cluster.sh stop SCRATCH     cancel its jobs, stop its daemons by their pid files
#   slurm_cluster.sh status SCRATCH   sinfo/squeue of that cluster
#
# Every file it writes (slurm.conf, munge key and socket, state, spool, pid and log files) lives in
# SCRATCH; nothing is written to /etc, /run or /var except what `apt-get install` itself puts there.
# Clients reach this cluster with SCRATCH/bin first on PATH: it holds wrappers of the SLURM
# commands that set SLURM_CONF=SCRATCH/slurm.conf. `start` prints both, as its last two lines:
#   SLURM_CONF=...   and   PATH_PREFIX=SCRATCH/bin
#
# Why it is built this way (measured on these machines, see the README's cluster section):
# - No systemd and apt starts no services: the daemons are started directly and run as root.
# - munged runs as root with its own key and socket in SCRATCH (`--force` accepts a socket below
#   a private folder such as pytest's tmp dirs); slurm.conf points clients to it with AuthInfo.
# - No accounting database: snakemake-executor-plugin-slurm must query job states with squeue
#   (`--slurm-status-command squeue`), which only sees jobs for MinJobAge seconds after they end,
#   so MinJobAge is long (600 s, far above 3x the plugin's first status-check delay).
# - There is no /etc/slurm/slurm.conf. Exporting SLURM_CONF is not enough: inside a job,
#   snakemake-executor-plugin-slurm-jobstep drops SLURM_* variables before it calls `srun`,
#   which then finds no configuration. Wrappers on PATH (exported to jobs) set it again.
# - Ports are picked free, so a stale cluster of an interrupted run cannot block a new one.
#
# Exit status: 0 ok; 3 SLURM cannot run here (not root, no apt-get, install failed) - callers skip;
# 1 the daemons were started but the node never became idle (logs are printed).
set -euo pipefail

usage() {
    echo "usage: $0 start|stop|status SCRATCH_DIR" >&2
    exit 2
}

say() { echo "slurm_cluster: $*" >&2; }

cannot_run() {
    say "cannot run SLURM here: $*"
    exit 3
}

[ $# -eq 2 ] || usage
ACTION=$1
mkdir -p "$2"
SCRATCH=$(cd "$2" && pwd)
CONF="$SCRATCH/slurm.conf"
RUN="$SCRATCH/run"
export SLURM_CONF="$CONF"
NEEDED=(munged mungekey slurmctld slurmd sinfo squeue sbatch srun scontrol scancel)
WAIT_IDLE_SECONDS=${SLURM_CLUSTER_WAIT:-60}

missing_commands() {
    local c
    for c in "${NEEDED[@]}"; do
        command -v "$c" >/dev/null 2>&1 || echo "$c"
    done
}

install_slurm() {
    [ -z "$(missing_commands)" ] && return 0
    command -v apt-get >/dev/null 2>&1 || cannot_run "SLURM is not installed and there is no apt-get"
    say "installing Debian's slurm-wlm and munge (apt-get)"
    {
        apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                slurm-wlm slurm-client munge
    } >"$SCRATCH/apt.log" 2>&1 || {
        tail -20 "$SCRATCH/apt.log" >&2
        cannot_run "apt-get install slurm-wlm munge failed (log: $SCRATCH/apt.log)"
    }
    [ -z "$(missing_commands)" ] ||
        cannot_run "still missing after install: $(missing_commands | tr '\n' ' ')"
}

# pid of a daemon from its pid file when that process is alive and is the expected program
running_pid() {
    local file=$1 name=$2 pid
    [ -f "$file" ] || return 1
    pid=$(cat "$file" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    echo "$pid"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port_pair() {
    local p
    for ((p = ${SLURM_CLUSTER_PORT:-6817}; p < 6817 + 400; p += 2)); do
        if ! port_in_use "$p" && ! port_in_use $((p + 1)); then
            echo "$p"
            return 0
        fi
    done
    say "no free pair of ports between 6817 and 7217"
    return 1
}

node_line() {
    # `slurmd -C` describes this machine; keep 10% of the memory for the system and the daemons.
    local line mem
    line=$(slurmd -C | grep '^NodeName=')
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$line")
    line=$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem * 9 / 10))/" <<<"$line")
    echo "$line NodeAddr=127.0.0.1 State=UNKNOWN"
}

write_conf() {
    local host port
    host=$(hostname -s)
    port=$(free_port_pair)
    cat >"$CONF" <<EOF
# Written by workflow/scripts/slurm_cluster.sh: a single-node test cluster, all paths in SCRATCH.
ClusterName=cytopipe
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SCRATCH/munge/munge.socket.2
SlurmUser=root
SlurmdUser=root
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
PlugStackConfig=$SCRATCH/plugstack.conf
StateSaveLocation=$SCRATCH/state
SlurmdSpoolDir=$SCRATCH/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$SCRATCH/log/slurmctld.log
SlurmdLogFile=$SCRATCH/log/slurmd.log
$(node_line)
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
# A second, non-default partition: a job lands here only when asked to (tests of partition settings)
PartitionName=batch Nodes=ALL Default=NO MaxTime=INFINITE State=UP
EOF
    : >"$SCRATCH/plugstack.conf"
}

CLIENTS=(sbatch srun squeue sinfo scontrol scancel sacct sacctmgr sshare sstat)

write_wrappers() {
    local c real
    mkdir -p "$SCRATCH/bin"
    for c in "${CLIENTS[@]}"; do
        real=$(PATH="/usr/bin:/bin:/usr/sbin:/sbin" command -v "$c") || continue
        printf '#!/bin/sh\nSLURM_CONF=%q exec %q "$@"\n' "$CONF" "$real" >"$SCRATCH/bin/$c"
        chmod 755 "$SCRATCH/bin/$c"
    done
}

start_munge() {
    local dir="$SCRATCH/munge"
    mkdir -p "$dir"
    chmod 755 "$dir" # munged insists that its socket's folder is searchable by all
    [ -s "$dir/munge.key" ] || mungekey --create --keyfile="$dir/munge.key"
    chmod 600 "$dir/munge.key"
    munged --force --socket="$dir/munge.socket.2" --key-file="$dir/munge.key" \
        --log-file="$dir/munged.log" --pid-file="$RUN/munged.pid" --seed-file="$dir/munged.seed"
}

node_state() { sinfo --noheader --Node --format=%t 2>/dev/null | head -1 | tr -d ' *'; }

wait_idle() {
    local i state=""
    for ((i = 0; i < WAIT_IDLE_SECONDS * 4; i++)); do
        state=$(node_state || true)
        [ "$state" = idle ] && return 0
        sleep 0.25
    done
    say "node not idle after ${WAIT_IDLE_SECONDS}s (state: '${state:-none}'); logs follow"
    tail -n 20 "$SCRATCH/log/slurmctld.log" "$SCRATCH/log/slurmd.log" "$SCRATCH/munge/munged.log" \
        >&2 2>/dev/null || true
    return 1
}

start() {
    [ "$(id -u)" = 0 ] || cannot_run "needs root (to install packages and run slurmctld/slurmd/munged)"
    export PATH="$PATH:/usr/sbin:/sbin"
    install_slurm
    mkdir -p "$RUN" "$SCRATCH/state" "$SCRATCH/spool" "$SCRATCH/log"
    running_pid "$RUN/munged.pid" munged >/dev/null || start_munge
    if running_pid "$RUN/slurmctld.pid" slurmctld >/dev/null; then
        say "slurmctld already running in $SCRATCH"
    else
        stop_daemon slurmd # a new slurm.conf (new ports) follows: no slurmd may keep the old one
        write_conf
        write_wrappers
        slurmctld -c -f "$CONF"
    fi
    running_pid "$RUN/slurmd.pid" slurmd >/dev/null || slurmd -c -f "$CONF"
    wait_idle || {
        stop
        exit 1
    }
    say "node idle: $(sinfo --noheader --Node --format='%N %c CPUs %m MB')"
    echo "SLURM_CONF=$CONF"
    echo "PATH_PREFIX=$SCRATCH/bin"
}

stop_daemon() {
    local name=$1 file="$RUN/$1.pid" pid i
    pid=$(running_pid "$file" "$name") || {
        rm -f "$file"
        return 0
    }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        [ -d "/proc/$pid" ] || break
        sleep 0.25
    done
    if [ -d "/proc/$pid" ]; then
        say "$name ($pid) did not stop on TERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

stop() {
    export PATH="$PATH:/usr/sbin:/sbin"
    if [ -f "$CONF" ] && running_pid "$RUN/slurmctld.pid" slurmctld >/dev/null; then
        scancel --quiet --user="$(id -un)" 2>/dev/null || true
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
}

status() {
    running_pid "$RUN/slurmctld.pid" slurmctld >/dev/null || {
        say "not running ($SCRATCH)"
        return 1
    }
    sinfo
    squeue
}

case $ACTION in
start) start ;;
stop) stop ;;
status) status ;;
*) usage ;;
esac

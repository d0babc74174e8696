#!/usr/bin/env bash
# Stop the one-node test cluster started by slurm/dev/start.sh: slurmd, slurmctld,
# slurmdbd, MariaDB, munged — each by the pid its own pid file names. Running jobs are
# killed; the state folder is kept (job ids keep counting up, sacct keeps its history).
# Safe to run when nothing is up.
set -euo pipefail

STATE=${LENS_SLURM_STATE:-/var/lib/lens-slurm}
RUN=$STATE/run

say() { echo "lens-slurm: $*"; }

# ours PID NAME: the pid is a live (not zombie) process called NAME; a stale pid file may
# name some other process by now, which is left alone.
ours() {
    local out
    out=$(ps -o stat=,comm= -p "$1" 2>/dev/null) || return 1
    [[ "$out" != Z* && "${out##* }" == "$2" ]]
}

# stop NAME PIDFILE: SIGTERM, wait up to 15 s, then SIGKILL.
stop() {
    local name=$1 pidfile=$2 pid
    [[ -s "$pidfile" ]] || return 0
    pid=$(cat "$pidfile")
    if ! ours "$pid" "$name"; then
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq 1 30); do
        ours "$pid" "$name" || { say "stopped $name"; rm -f "$pidfile"; return 0; }
        sleep 0.5
    done
    say "$name (pid $pid) ignored SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

stop slurmd "$RUN/slurmd.pid"
stop slurmctld "$RUN/slurmctld.pid"
stop slurmdbd "$RUN/slurmdbd.pid"
if [[ -s /run/mysqld/mysqld.pid ]] && ours "$(cat /run/mysqld/mysqld.pid)" mariadbd; then
    # mysqladmin shutdown also ends mysqld_safe, which would otherwise restart mysqld.
    pid=$(cat /run/mysqld/mysqld.pid)
    mysqladmin --socket=/run/mysqld/mysqld.sock shutdown 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 30); do ours "$pid" mariadbd || break; sleep 0.5; done
    say "stopped MariaDB"
fi
stop munged /run/munge/munged.pid
say "down"

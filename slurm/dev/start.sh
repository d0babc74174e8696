#!/usr/bin/env bash
# Start a real one-node Slurm cluster on this machine, for the tests and for trying lens.
#
#   bash slurm/dev/start.sh      # ~30 s on a fresh Debian machine; a no-op when already up
#   bash slurm/dev/stop.sh       # stops every daemon this script started
#
# Needs root on Debian (no sudo). Installs slurm-wlm, slurmdbd, munge and mariadb-server if
# missing, writes /etc/slurm/{slurm,slurmdbd,cgroup}.conf from the templates beside this
# script (host name and node size taken from this machine), then starts, in order:
# munged (as user munge) -> MariaDB -> slurmdbd -> slurmctld -> slurmd, registers the
# cluster/account/user once, and waits until the node is idle and sacct answers.
#
# Cluster: "lens", partition "debug" (default, MaxTime 2 h), one node with this machine's
# cores and memory (minus a margin), CR_Core_Memory so several jobs run at once, requeue
# allowed, accounting through slurmdbd. All state, pids and logs: $LENS_SLURM_STATE
# (default /var/lib/lens-slurm); the logs are in its log/ folder.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${LENS_SLURM_STATE:-/var/lib/lens-slurm}
ETC=/etc/slurm
LOG=$STATE/log
RUN=$STATE/run
DB_NAME=slurm_acct_db
DB_USER=slurm
MYSQL_SOCKET=/run/mysqld/mysqld.sock
MYSQL_PID=/run/mysqld/mysqld.pid  # mariadbd (user mysql) writes it
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)

say() { echo "lens-slurm: $*"; }

# Print which daemon failed, the tail of its log, and exit non-zero.
die() {
    local what=$1 log=${2:-}
    echo "lens-slurm: ERROR: $what" >&2
    if [[ -n "$log" && -s "$log" ]]; then
        echo "---- last lines of $log ----" >&2
        tail -n 25 "$log" >&2
        echo "----" >&2
    fi
    exit 1
}

# Poll a command until it succeeds or the timeout (seconds) passes.
wait_for() {
    local timeout=$1; shift
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

# wait_daemon PROCESS LOG TIMEOUT CMD...: poll CMD until the daemon answers; fail at once
# (with its log) when the PROCESS is gone, rather than waiting out the timeout.
wait_daemon() {
    local proc=$1 log=$2 timeout=$3; shift 3
    local deadline=$((SECONDS + timeout)) gone=0
    until "$@" >/dev/null 2>&1; do
        if pgrep -x "$proc" >/dev/null; then gone=0; else gone=$((gone + 1)); fi
        ((gone < 4)) || die "$proc is not running (it exited at start-up)" "$log"
        ((SECONDS < deadline)) || die "$proc does not answer after ${timeout} s ($*)" "$log"
        sleep 0.5
    done
}

# pid_alive PIDFILE NAME: the pid file names a live (not zombie) process called NAME.
# (After a crash or a reboot the pid may belong to some other process by now.)
pid_alive() {
    local pid state
    [[ -s "$1" ]] || return 1
    pid=$(cat "$1")
    state=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
    [[ -n "$state" && "$state" != Z* && "$(ps -o comm= -p "$pid")" == "$2" ]]
}

cluster_ready() {
    local state
    state=$(timeout 5 sinfo -h -N -o %T 2>/dev/null | head -n 1) || return 1
    [[ "$state" =~ ^(idle|mixed|allocated|completing)$ ]] || return 1
    timeout 5 sacct -n -X -S now >/dev/null 2>&1
}

[[ $(id -u) -eq 0 ]] || die "run as root: the daemons need it (there is no sudo here)"

# ---- configuration, from this machine ----------------------------------------------------
# render_configs DIR: slurm.conf, slurmdbd.conf and cgroup.conf for this machine into DIR.
render_configs() {
    local dir=$1 host node real_mem margin mem cpus def_mem node_line db_pass
    host=$(hostname -s)
    node=$(slurmd -C | head -n 1)  # NodeName=<host> CPUs=.. Boards=.. ... RealMemory=<MiB>
    [[ "$node" =~ RealMemory=([0-9]+) ]] || die "cannot read the node size from 'slurmd -C': $node"
    real_mem=${BASH_REMATCH[1]}
    margin=$((real_mem / 10 > 1024 ? real_mem / 10 : 1024))  # for the OS and the daemons
    mem=$((real_mem - margin))
    [[ "$node" =~ CPUs=([0-9]+) ]] || die "cannot read the CPU count from 'slurmd -C': $node"
    cpus=${BASH_REMATCH[1]}
    def_mem=$((mem / cpus / 2))
    node_line="$host $(sed -E "s/^NodeName=[^ ]+ //; s/RealMemory=[0-9]+/RealMemory=$mem/" <<<"$node")"
    [[ -s "$STATE/db-password" ]] \
        || (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$STATE/db-password")
    db_pass=$(cat "$STATE/db-password")
    local name
    for name in slurm.conf slurmdbd.conf cgroup.conf; do
        sed -e "s|@HOST@|$host|g" -e "s|@STATE@|$STATE|g" -e "s|@NODE_LINE@|$node_line|g" \
            -e "s|@DEF_MEM_PER_CPU@|$def_mem|g" -e "s|@DB_USER@|$DB_USER|g" \
            -e "s|@DB_PASS@|$db_pass|g" -e "s|@DB_NAME@|$DB_NAME|g" \
            "$HERE/$name.in" >"$dir/$name"
    done
    chmod 600 "$dir/slurmdbd.conf"  # slurmdbd refuses a readable one
}

# ---- quick exit when the cluster is already up (with this configuration) -----------------
if pid_alive "$RUN/slurmctld.pid" slurmctld && pid_alive "$RUN/slurmd.pid" slurmd \
    && cluster_ready; then
    fresh=$(mktemp -d)
    render_configs "$fresh"
    if cmp -s "$fresh/slurm.conf" "$ETC/slurm.conf" \
        && cmp -s "$fresh/slurmdbd.conf" "$ETC/slurmdbd.conf" \
        && cmp -s "$fresh/cgroup.conf" "$ETC/cgroup.conf"; then
        rm -rf "$fresh"
        say "already up ($(sinfo -h -o '%P %D node(s) %T' | head -n 1))"
        exit 0
    fi
    rm -rf "$fresh"
    say "the configuration changed: restarting the cluster"
    bash "$HERE/stop.sh"
fi
start_time=$SECONDS

# ---- packages ----------------------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt_log=$(mktemp /tmp/lens-slurm-apt.XXXXXX)
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1 \
        || die "apt-get install ${missing[*]} failed" "$apt_log"
    rm -f "$apt_log"
fi

mkdir -p "$STATE"/{ctld,spool,mysql} "$LOG" "$RUN" "$ETC"
fresh=$(mktemp -d)
render_configs "$fresh"
for name in slurm.conf slurmdbd.conf cgroup.conf; do
    mv "$fresh/$name" "$ETC/$name"
done
rmdir "$fresh"
host=$(hostname -s)
db_pass=$(cat "$STATE/db-password")

# ---- munge -------------------------------------------------------------------------------
if ! pid_alive /run/munge/munged.pid munged; then
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged </dev/null >>"$LOG/munged.out" 2>&1 \
        || die "munged failed to start" /var/log/munge/munged.log
fi
wait_daemon munged /var/log/munge/munged.log 10 bash -c 'munge -n | unmunge'

# ---- MariaDB (accounting storage), its data under the state folder -----------------------
if ! pid_alive "$MYSQL_PID" mariadbd; then
    install -d -o mysql -g mysql -m 755 /run/mysqld "$LOG/mysql"
    chown -R mysql:mysql "$STATE/mysql"
    if [[ ! -d "$STATE/mysql/mysql" ]]; then
        mariadb-install-db --user=mysql --datadir="$STATE/mysql" --skip-test-db \
            --auth-root-authentication-method=socket >"$LOG/mysql-install.log" 2>&1 \
            || die "mariadb-install-db failed" "$LOG/mysql-install.log"
    fi
    setsid mysqld_safe --user=mysql --datadir="$STATE/mysql" --socket="$MYSQL_SOCKET" \
        --pid-file="$MYSQL_PID" --log-error="$LOG/mysql/mysqld.log" --skip-networking \
        </dev/null >>"$LOG/mysqld_safe.out" 2>&1 &
fi
wait_daemon mariadbd "$LOG/mysql/mysqld.log" 30 mysqladmin --socket="$MYSQL_SOCKET" ping
mysql --socket="$MYSQL_SOCKET" -u root <<SQL || die "creating the accounting database failed"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$db_pass';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$db_pass';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
SQL

# ---- slurmdbd, then the cluster/account/user associations (once) -------------------------
if ! pid_alive "$RUN/slurmdbd.pid" slurmdbd; then
    slurmdbd </dev/null >>"$LOG/slurmdbd.out" 2>&1 || die "slurmdbd failed to start" "$LOG/slurmdbd.log"
fi
wait_daemon slurmdbd "$LOG/slurmdbd.log" 30 sacctmgr -n show cluster
if [[ -z $(sacctmgr -n -P show cluster lens format=cluster) ]]; then
    sacctmgr -i add cluster lens >/dev/null
fi
if [[ -z $(sacctmgr -n -P show account lens format=account) ]]; then
    sacctmgr -i add account lens description="lens test account" organization=lens >/dev/null
fi
for user in root ${SUDO_USER:-}; do
    if [[ -z $(sacctmgr -n -P show assoc where user="$user" account=lens format=user) ]]; then
        sacctmgr -i add user "$user" account=lens defaultaccount=lens >/dev/null
    fi
done

# ---- slurmctld and slurmd ----------------------------------------------------------------
if pid_alive "$RUN/slurmctld.pid" slurmctld; then
    scontrol reconfigure >/dev/null 2>&1 || true  # pick up a rewritten slurm.conf
else
    slurmctld </dev/null >>"$LOG/slurmctld.out" 2>&1 || die "slurmctld failed to start" "$LOG/slurmctld.log"
fi
wait_daemon slurmctld "$LOG/slurmctld.log" 30 scontrol ping
if ! pid_alive "$RUN/slurmd.pid" slurmd; then
    slurmd </dev/null >>"$LOG/slurmd.out" 2>&1 || die "slurmd failed to start" "$LOG/slurmd.log"
fi

# ---- ready: the node is idle and accounting answers --------------------------------------
if ! wait_for 60 cluster_ready; then
    # A node left DOWN/DRAIN by an earlier unclean stop comes back with a resume.
    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    wait_for 30 cluster_ready || die "node $host is not idle: $(sinfo -h -N -o '%T %E' 2>&1)" \
        "$LOG/slurmd.log"
fi
say "up in $((SECONDS - start_time)) s: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %T' | head -n 1)"

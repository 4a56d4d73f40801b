#!/usr/bin/env bash
# A one-node SLURM on this machine, for trying and testing tirun's SLURM launcher (as root):
#
#   cluster/local_slurm.sh start             # slurmctld + slurmd, accounting on a local MariaDB
#   cluster/local_slurm.sh start --no-accounting   # the same without slurmdbd (no sacct)
#   cluster/local_slurm.sh stop              # stops every daemon it started, removes its state
#   cluster/local_slurm.sh status
#
# Debian's packages (slurm-wlm, munge; slurmdbd and mariadb-server for accounting) are
# installed when missing. The config fits a container: processes tracked through /proc
# (proctrack/linuxproc), no CPU binding or cgroups (task/none), state, logs and the database in
# one temporary folder ($TIRUN_SLURM_DIR, /tmp/tirun-slurm by default). The node's CPUs and
# memory are what `slurmd -C` reads. Two partitions share the node: `debug` (the default) and
# `urgent`, whose jobs preempt debug's (requeued after a USR2 signal, as on a real cluster).
set -euo pipefail

STATE=${TIRUN_SLURM_DIR:-/tmp/tirun-slurm}
CONF_DIR=/etc/slurm
MARK="# written by tirun's cluster/local_slurm.sh"
DB_PORT=${TIRUN_SLURM_DB_PORT:-3307}
DBD_PORT=${TIRUN_SLURM_DBD_PORT:-6819}
GRACE_S=${TIRUN_SLURM_GRACE_S:-20}   # how long a preempted job has between USR2 and its kill

say() { echo "local_slurm: $*" >&2; }
die() { say "error: $*"; exit 1; }
seconds_since() { echo "$(( $(date +%s%N) / 1000000 - $1 ))" | awk '{printf "%.1f", $1 / 1000}'; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

install_packages() {
    local wanted=(slurm-wlm munge) missing=()
    [[ $ACCOUNTING == yes ]] && wanted+=(slurmdbd mariadb-server)
    for package in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
            || missing+=("$package")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "installing ${missing[*]} needs root"
    local t0; t0=$(now_ms)
    say "installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    # Debian's postinst scripts start daemons where they can; this script runs its own.
    pkill -x -F /run/mysqld/mysqld.pid 2>/dev/null || true
    say "installed in $(seconds_since "$t0") s"
}

write_config() {
    if [[ -f $CONF_DIR/slurm.conf ]] && ! grep -qF "$MARK" "$CONF_DIR/slurm.conf"; then
        die "$CONF_DIR/slurm.conf exists and was not written by this script; not touching it"
    fi
    mkdir -p "$CONF_DIR" "$STATE"/{ctld,spool,log,run}
    local host node
    host=$(hostname -s)
    node=$(slurmd -C | head -1)   # NodeName=... CPUs=... RealMemory=...
    [[ $node == NodeName=* ]] || die "slurmd -C gave no node line: $node"
    local accounting="AccountingStorageType=accounting_storage/none"
    if [[ $ACCOUNTING == yes ]]; then
        accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
    fi
    cat >"$CONF_DIR/slurm.conf" <<EOF
$MARK
ClusterName=tirun
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# A container: processes found through /proc, no cgroups, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
# Jobs are requeued, not cancelled, when preempted, and get their --signal first.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
JobRequeue=1
KillWait=5
MinJobAge=300
InactiveLimit=0
SchedulerParameters=sched_interval=2
$accounting
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=$GRACE_S
PartitionName=urgent Nodes=$host MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
}

start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null \
            || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge
    if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        runuser -u munge -- munged --pid-file=/run/munge/munged.pid
        echo /run/munge/munged.pid >"$STATE/run/munged.pidfile"
    fi
}

start_database() {
    local data=$STATE/mysql/data run=$STATE/mysql   # MariaDB runs as mysql: its own folder
    if [[ ! -d $data/mysql ]]; then
        mkdir -p "$data" && chown -R mysql:mysql "$run"
        mariadb-install-db --user=mysql --datadir="$data" --skip-test-db \
            --auth-root-authentication-method=socket >"$STATE/log/mariadb-install.log" 2>&1
    fi
    mariadbd --user=mysql --datadir="$data" --socket="$run/mysqld.sock" \
        --pid-file="$run/mariadbd.pid" --port="$DB_PORT" --bind-address=127.0.0.1 \
        --skip-name-resolve --innodb-buffer-pool-size=64M --log-error="$run/mariadb.log" \
        >>"$run/mariadb.out" 2>&1 &
    wait_for "MariaDB" mariadb --socket="$run/mysqld.sock" -e "select 1"
    mariadb --socket="$run/mysqld.sock" <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'tirun-local';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
    cat >"$CONF_DIR/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=tirun-local
StorageLoc=slurm_acct_db
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
EOF
    chmod 600 "$CONF_DIR/slurmdbd.conf"
    slurmdbd
    wait_for "slurmdbd" sacctmgr -n list cluster
    sacctmgr -i -Q add cluster tirun >/dev/null 2>&1 || true
    sacctmgr -i -Q add account tirun cluster=tirun >/dev/null 2>&1 || true
    sacctmgr -i -Q add user "$(id -un)" account=tirun cluster=tirun >/dev/null 2>&1 || true
}

wait_for() {  # wait_for NAME COMMAND...: until COMMAND succeeds, at most 60 s
    local name=$1; shift
    for _ in $(seq 300); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$name did not come up in 60 s (logs in $STATE/log)"
}

node_is_idle() { sinfo -h -N -o %T | grep -qE '^(idle|mixed|allocated)'; }

start() {
    local t0; t0=$(now_ms)
    install_packages
    local t1; t1=$(now_ms)
    if scontrol ping 2>/dev/null | grep -q UP; then
        say "a cluster is already up (scontrol ping); stop it first"
        exit 0
    fi
    write_config
    start_munge
    [[ $ACCOUNTING == yes ]] && start_database
    slurmctld
    wait_for "slurmctld" scontrol ping
    slurmd
    wait_for "the node" node_is_idle
    echo "$ACCOUNTING" >"$STATE/accounting"
    say "up in $(seconds_since "$t1") s (with installing: $(seconds_since "$t0") s);" \
        "accounting: $ACCOUNTING; state and logs in $STATE"
    sinfo
}

stop_pidfile() {  # stop_pidfile FILE: TERM the daemon whose pid FILE holds, wait for it
    local file=$1 pid
    [[ -s $file ]] || return 0
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

stop() {
    [[ -d $STATE ]] || { say "nothing to stop ($STATE does not exist)"; return 0; }
    scancel --quiet --user="$(id -un)" 2>/dev/null || true
    stop_pidfile "$STATE/run/slurmd.pid"
    stop_pidfile "$STATE/run/slurmctld.pid"
    stop_pidfile "$STATE/run/slurmdbd.pid"
    stop_pidfile "$STATE/mysql/mariadbd.pid"
    [[ -s $STATE/run/munged.pidfile ]] && stop_pidfile "$(cat "$STATE/run/munged.pidfile")"
    for file in "$CONF_DIR/slurm.conf" "$CONF_DIR/slurmdbd.conf"; do
        [[ -f $file ]] && grep -qF "$MARK" "$file" && rm -f "$file"
    done
    rm -rf "$STATE"
    say "stopped"
}

ACCOUNTING=yes
command=${1:-}
shift || true
for arg in "$@"; do
    case $arg in
        --no-accounting) ACCOUNTING=no ;;
        *) die "unknown option $arg (--no-accounting)" ;;
    esac
done
case $command in
    start) start ;;
    stop) stop ;;
    status) scontrol ping && sinfo && echo "accounting: $(cat "$STATE/accounting" 2>/dev/null)" ;;
    *) echo "usage: $0 start [--no-accounting] | stop | status" >&2; exit 2 ;;
esac

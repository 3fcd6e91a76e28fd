#!/usr/bin/env bash
# Stops what scripts/cluster-up.sh started: the app, the Ray worker and head (only their own process
# sessions: another Ray on this machine is left alone), and PostgreSQL. The data stays in the folder
# (database, run outputs); remove it by hand to start afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(realpath -m "${CLUSTER_DIR:-.cluster}")
stop_session() {  # name: SIGTERM, then SIGKILL, every process of the session started as <name>.pid
    local pidfile="$dir/$1.pid"
    [ -f "$pidfile" ] || return 0
    local sid; sid=$(cat "$pidfile")
    for sig in TERM KILL; do
        pids=$(ps -eo pid=,sid= | awk -v s="$sid" '$2 == s {print $1}')
        [ -n "$pids" ] || break
        kill -s "$sig" $pids 2>/dev/null || true
        for _ in $(seq 10); do
            [ -z "$(ps -eo pid=,sid= | awk -v s="$sid" '$2 == s {print $1}')" ] && break
            sleep 1
        done
    done
    rm -f "$pidfile"
    echo "stopped $1"
}
stop_session app
stop_session ray-worker
stop_session ray-head
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
[ -n "$pgbin" ] || pgbin=$(dirname "$(command -v pg_ctl || echo /nonexistent/pg_ctl)")
if [ -f "$dir/pg/data/PG_VERSION" ]; then
    as_pg=()
    [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/pg/data" -m fast -w stop >/dev/null 2>&1 && echo "stopped PostgreSQL" || true
fi

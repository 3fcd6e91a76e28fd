#!/usr/bin/env bash
# The team set-up on one machine (docs/deploy.md, "Team set-up: PostgreSQL + Ray"): a PostgreSQL
# server, a Ray head, one Ray worker node and the web app pointed at them, all in the background.
# Stop everything with scripts/cluster-down.sh. On several machines, run the same commands by hand
# (the docs say which run where); this script is the tested, single-machine version.
#
#   bash scripts/cluster-up.sh            # state in .cluster/ (database files, logs, pids)
#   CLUSTER_DIR=/srv/sw PORT=8601 bash scripts/cluster-up.sh
#
# Needs the cluster extra in .venv (bash scripts/setup.sh installs the lock, which has Ray) and the
# PostgreSQL server binaries (initdb, pg_ctl: apt-get install postgresql).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=$(realpath -m "${CLUSTER_DIR:-.cluster}")
PORT=${PORT:-8501}
PG_PORT=${PG_PORT:-5433}
RAY_PORT=${RAY_PORT:-6380}
WORKER_CPUS=${WORKER_CPUS:-$(nproc)}
mkdir -p "$dir"
[ -x .venv/bin/ray ] || bash scripts/setup.sh
[ -x .venv/bin/ray ] || { echo "Ray is not in .venv: .venv/bin/pip install -e '.[cluster]'" >&2; exit 1; }

# --- PostgreSQL: a cluster in $dir/pg, on 127.0.0.1:$PG_PORT --------------------------------------
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
[ -n "$pgbin" ] || pgbin=$(dirname "$(command -v initdb || echo /nonexistent/initdb)")
[ -x "$pgbin/initdb" ] || { echo "no PostgreSQL server binaries: apt-get install postgresql" >&2; exit 1; }
as_pg=()
if [ "$(id -u)" = 0 ]; then  # PostgreSQL refuses to run as root
    as_pg=(runuser -u postgres --)
    mkdir -p "$dir/pg"; chown postgres "$dir/pg"
fi
if [ ! -f "$dir/pg/data/PG_VERSION" ]; then
    mkdir -p "$dir/pg"
    pw="$dir/pg/.pw"; (umask 077; echo "${PG_PASSWORD:-shrinkwise}" >"$pw")
    [ "$(id -u)" = 0 ] && chown postgres "$pw"
    "${as_pg[@]}" "$pgbin/initdb" -D "$dir/pg/data" -A scram-sha-256 -U shrinkwise \
        --pwfile="$pw" -E UTF8 --locale=C >"$dir/pg-init.log"
    rm -f "$pw"
fi
if ! "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/pg/data" status >/dev/null 2>&1; then
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 60 \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $dir/pg" start >/dev/null
fi
url="postgresql+psycopg://shrinkwise:${PG_PASSWORD:-shrinkwise}@127.0.0.1:$PG_PORT/postgres"
echo "PostgreSQL: $url"

# --- shared storage: one folder every node sees at the same path (here: the same machine) ------------
data="$dir/data"
mkdir -p "$data"
export SHRINKWISE_HOME="$data" SHRINKWISE_DATABASE_URL="$url" RAY_USAGE_STATS_ENABLED=0
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

# --- Ray: a head without CPUs for jobs, and one worker node --------------------------------------
start_ray() {  # name, args...: `ray start --block` in its own session, pid in $dir/<name>.pid
    local name=$1; shift
    setsid .venv/bin/ray start --block --disable-usage-stats --temp-dir="$dir/ray" "$@" \
        >"$dir/$name.log" 2>&1 < /dev/null &
    echo $! >"$dir/$name.pid"
}
wait_nodes() {  # n: until the cluster has n live nodes
    for _ in $(seq 120); do
        n=$(.venv/bin/python -c "
import ray, logging
ray.init(address='127.0.0.1:$RAY_PORT', logging_level=logging.ERROR)
print(sum(1 for x in ray.nodes() if x['Alive']))" 2>/dev/null || echo 0)
        [ "$n" -ge "$1" ] && return 0
        sleep 1
    done
    echo "the Ray cluster did not reach $1 node(s); see $dir/*.log" >&2; return 1
}
if [ ! -f "$dir/ray-head.pid" ] || ! kill -0 "$(cat "$dir/ray-head.pid")" 2>/dev/null; then
    start_ray ray-head --head --port="$RAY_PORT" --node-ip-address=127.0.0.1 --num-cpus=0 \
        --include-dashboard=false
    wait_nodes 1
    start_ray ray-worker --address="127.0.0.1:$RAY_PORT" --node-ip-address=127.0.0.1 --num-cpus="$WORKER_CPUS"
    wait_nodes 2
fi
echo "Ray: head 127.0.0.1:$RAY_PORT, one worker node with $WORKER_CPUS CPUs (logs: $dir/ray/)"

# --- the app, sending jobs to the cluster ----------------------------------------------------------
export SHRINKWISE_RAY_ADDRESS="127.0.0.1:$RAY_PORT"
.venv/bin/shrinkwise kb load >/dev/null
if [ ! -f "$dir/app.pid" ] || ! kill -0 "$(cat "$dir/app.pid")" 2>/dev/null; then
    setsid .venv/bin/streamlit run app/main.py --server.port "$PORT" --server.headless true \
        >"$dir/app.log" 2>&1 < /dev/null &
    echo $! >"$dir/app.pid"
fi
for _ in $(seq 60); do
    curl -fs "http://127.0.0.1:$PORT/_stcore/health" >/dev/null 2>&1 && break
    sleep 1
done
echo "Shrinkwise: http://localhost:$PORT (jobs run on the Ray cluster; stop all: bash scripts/cluster-down.sh)"

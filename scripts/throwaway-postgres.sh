#!/usr/bin/env bash
# A throwaway PostgreSQL server for benchmarks and trying a cluster out:
#   scripts/throwaway-postgres.sh start DIR   -> initdb into DIR, start on 127.0.0.1 (a free
#                                                port) and a socket in DIR; prints the state URL
#   scripts/throwaway-postgres.sh stop DIR    -> stops it and removes DIR
# Uses the distribution's server (apt-get install postgresql). Trust authentication on loopback
# only: for tests and benchmarks, never for a real cluster.
set -euo pipefail
command=${1:?start or stop}
dir=${2:?a directory}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "PostgreSQL is not installed: apt-get install postgresql" >&2; exit 1; }
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case $command in
start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U sllm >/dev/null
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null 2>&1 \
        || { echo "PostgreSQL did not start; its log:" >&2; cat "$dir/log" >&2; exit 1; }
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U sllm sllm
    echo "postgres://sllm@127.0.0.1:$port/sllm"
    ;;
stop)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac

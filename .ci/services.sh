#!/usr/bin/env bash
# Real PostgreSQL and Redis (Debian packages) on loopback for the gateway tests.
#
#   bash .ci/services.sh install          # apt-get the packages if missing (root)
#   eval "$(bash .ci/services.sh start)"  # start both in a fresh temp dir; exports the test URLs
#   bash .ci/services.sh stop             # stop what `start` started (uses $T2IGUARD_SERVICES_DIR)
#
# PostgreSQL refuses to run as root, so as root the cluster is created and run by the `postgres`
# system user (created by the Debian package); as another user it runs as that user. Ports are
# picked free at start. Nothing listens beyond 127.0.0.1.
set -euo pipefail

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

as_pg() {
  if [ "$(id -u)" = "0" ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi
}

case "${1:-}" in
  install)
    need=()
    [ -n "$(pg_bin)" ] || need+=(postgresql)
    command -v redis-server >/dev/null || need+=(redis-server)
    command -v chromium >/dev/null || need+=(chromium)
    command -v chromedriver >/dev/null || need+=(chromium-driver)
    if [ ${#need[@]} -gt 0 ]; then
      if [ "$(id -u)" != "0" ]; then echo "services.sh: missing ${need[*]} (install as root)" >&2; exit 1; fi
      echo "services.sh: installing ${need[*]}" >&2
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
    fi
    ;;
  start)
    dir=$(mktemp -d /tmp/t2iguard-services.XXXXXX)
    chmod 755 "$dir"
    bin=$(pg_bin)
    [ -n "$bin" ] || { echo "services.sh: PostgreSQL is not installed" >&2; exit 1; }
    pg_port=$(free_port)
    redis_port=$(free_port)
    mkdir -p "$dir/pg"
    [ "$(id -u)" = "0" ] && chown postgres "$dir" "$dir/pg"
    as_pg "'$bin/initdb' -D '$dir/pg' -U t2iguard --auth=trust -E UTF8 --no-instructions" >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    as_pg "'$bin/pg_ctl' -D '$dir/pg' -l '$dir/pg/server.log' -w -t 60 -o \"-p $pg_port -k '$dir' -c listen_addresses=127.0.0.1\" start" >&2 \
      || { cat "$dir/pg/server.log" >&2; exit 1; }
    as_pg "'$bin/createdb' -h 127.0.0.1 -p $pg_port -U t2iguard t2iguard_test" >&2
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
      --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir" >&2
    for _ in $(seq 50); do
      redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
    echo "export T2IGUARD_SERVICES_DIR='$dir'"
    echo "export T2IGUARD_TEST_POSTGRES_URL='postgresql+psycopg://t2iguard@127.0.0.1:$pg_port/t2iguard_test'"
    echo "export T2IGUARD_TEST_REDIS_URL='redis://127.0.0.1:$redis_port/0'"
    command -v chromium >/dev/null && echo "export T2IGUARD_TEST_CHROMIUM='$(command -v chromium)'"
    command -v chromedriver >/dev/null && echo "export T2IGUARD_TEST_CHROMEDRIVER='$(command -v chromedriver)'"
    true
    ;;
  stop)
    dir="${T2IGUARD_SERVICES_DIR:-}"
    [ -n "$dir" ] && [ -d "$dir" ] || exit 0
    if [ -f "$dir/pg/postmaster.pid" ]; then
      as_pg "'$(pg_bin)/pg_ctl' -D '$dir/pg' -m fast -w stop" >/dev/null 2>&1 || true
    fi
    if [ -f "$dir/redis.pid" ]; then
      kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 install|start|stop" >&2
    exit 2
    ;;
esac

# shellcheck shell=bash
# Real services for tests and benchmarks, on loopback only.
#
# Source this file, then call `ensure_packages` and `start_postgres`;
# `stop_services` stops whatever was started (the callers trap it on EXIT).
# Each service gets a fresh directory under $CAIRN_SERVICES_DIR (a new
# temporary directory by default) and a free port.

CAIRN_SERVICES_DIR=${CAIRN_SERVICES_DIR:-$(mktemp -d /tmp/cairn-services.XXXXXX)}
chmod 755 "$CAIRN_SERVICES_DIR"
CAIRN_STARTED_PG=""

log() { printf '[services] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

postgres_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# Installs what the tests need from Debian's packages when it is missing.
ensure_packages() {
  local missing=()
  [ -n "$(postgres_bin)" ] && [ -x "$(postgres_bin)/initdb" ] || missing+=(postgresql)
  command -v python3 >/dev/null || missing+=(python3)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from Debian packages"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Starts a throw-away PostgreSQL cluster on 127.0.0.1 and exports
# TEST_POSTGRES_URL (a superuser URL of its `postgres` database).
start_postgres() {
  local bin dir port password run_as=()
  bin=$(postgres_bin)
  dir="$CAIRN_SERVICES_DIR/postgres"
  port=$(free_port)
  password="cairn-test-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  mkdir -p "$dir"
  printf '%s\n' "$password" > "$CAIRN_SERVICES_DIR/pgpass"
  if [ "$(id -u)" = 0 ]; then
    # initdb refuses to run as root.
    chown -R postgres "$dir" "$CAIRN_SERVICES_DIR/pgpass"
    run_as=(runuser -u postgres --)
  fi
  # Run from a directory the postgres user can enter: initdb and pg_ctl
  # change back to the working directory, which may be under /root.
  (cd "$dir" && "${run_as[@]}" "$bin/initdb" -D "$dir/data" -U cairn --pwfile="$CAIRN_SERVICES_DIR/pgpass" \
    --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1) \
    || { cat "$dir/initdb.log" >&2; return 1; }
  (cd "$dir" && "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null) || { cat "$dir/server.log" >&2; return 1; }
  CAIRN_STARTED_PG="$bin/pg_ctl -D $dir/data"
  CAIRN_PG_RUN_AS="${run_as[*]}"
  export TEST_POSTGRES_URL="postgres://cairn:$password@127.0.0.1:$port/postgres"
  log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

stop_services() {
  if [ -n "$CAIRN_STARTED_PG" ]; then
    # shellcheck disable=SC2086
    (cd / && $CAIRN_PG_RUN_AS $CAIRN_STARTED_PG -m immediate stop >/dev/null 2>&1) || true
    CAIRN_STARTED_PG=""
  fi
  rm -rf "$CAIRN_SERVICES_DIR"
}

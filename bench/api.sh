#!/usr/bin/env bash
# The API at scale: one organization with 100 000 backup records
# (BENCH_BACKUPS), 1 000 jobs (BENCH_JOBS), their runs and verifications,
# seeded by `cairn-bench api seed`; then a real `cairn serve` (release) on
# that database answers `cairn-bench api load`: 50 concurrent clients
# (BENCH_CLIENTS), 2 000 requests per endpoint (BENCH_REQUESTS) — history
# (first page; by job; by status; by date range; a deep cursor), the job
# list with every health field, a job's runs. Prints requests per second,
# p50 and p99 per endpoint, on SQLite and on PostgreSQL (BENCH_BACKENDS).
#
#   bench/api.sh
#   BENCH_BACKENDS=sqlite BENCH_BACKUPS=20000 bench/api.sh
#
# Targets (bench/README.md): p50 <= 10 ms and p99 <= 50 ms everywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

BACKENDS=${BENCH_BACKENDS:-sqlite postgres}

# shellcheck source=scripts/services.sh
source scripts/services.sh
trap 'stop_serve; stop_services' EXIT
ensure_packages
if [[ " $BACKENDS " == *" postgres "* ]]; then start_postgres; fi

echo "[bench] building cairn and cairn-bench (release)" >&2
cargo build --quiet --release --bin cairn
cargo build --quiet --release -p cairn-bench
TARGET=${CARGO_TARGET_DIR:-target}/release
work="$CAIRN_SERVICES_DIR/bench-api"
mkdir -p "$work"

SERVE_PID=""
stop_serve() {
  if [ -n "$SERVE_PID" ]; then
    kill "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=""
  fi
}

for backend in $BACKENDS; do
  data="$work/data-$backend"
  rm -rf "$data" && mkdir -p "$data"
  case $backend in
    sqlite) url="sqlite://$data/cairn.db" ;;
    postgres)
      "$TEST_PG_BIN/psql" -Xq -d "$TEST_POSTGRES_URL" -c "CREATE DATABASE bench_api"
      url="${TEST_POSTGRES_URL%/*}/bench_api"
      ;;
    *) echo "unknown backend '$backend': sqlite, postgres" >&2; exit 2 ;;
  esac
  seeded=$(BENCH_DATA_DIR="$data" BENCH_DATABASE_URL="$url" CAIRN_LOG=warn "$TARGET/cairn-bench" api seed)
  org=$(sed -n 's/.*org=\([^ ]*\).*/\1/p' <<<"$seeded")
  token=$(sed -n 's/.*token=\([^ ]*\).*/\1/p' <<<"$seeded")
  job=$(sed -n 's/.*job=\([^ ]*\).*/\1/p' <<<"$seeded")
  cursor=$(sed -n 's/.*cursor=\([^ ]*\).*/\1/p' <<<"$seeded")
  port=$(free_port)
  CAIRN_DATA_DIR="$data" CAIRN_DATABASE_URL="$url" CAIRN_LISTEN="127.0.0.1:$port" \
    CAIRN_LOG=warn "$TARGET/cairn" serve >"$work/serve-$backend.log" 2>&1 &
  SERVE_PID=$!
  wait_for_port "$port" cairn || { cat "$work/serve-$backend.log" >&2; exit 1; }
  BENCH_LABEL=$backend BENCH_SERVER_PID=$SERVE_PID "$TARGET/cairn-bench" api load "http://127.0.0.1:$port" "$token" "$org" "$job" "$cursor"
  stop_serve
done

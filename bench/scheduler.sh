#!/usr/bin/env bash
# Scheduler benchmark: 100 000 enabled jobs on PostgreSQL, 10 000 of them
# due in the same minute (each covering one app with one volume), Redis for
# the slot locks. Prints the tick time with nothing due, then for one
# replica and for three (ticking at once, each with its own connection
# pool) the time from the minute boundary until all 10 000 runs and their
# backups exist, and the Redis round trips per tick.
#
#   bench/scheduler.sh
#   BENCH_JOBS=20000 BENCH_DUE=2000 bench/scheduler.sh
#
# Targets (bench/README.md): a tick with nothing due <= 50 ms at 100 000
# jobs; all 10 000 runs within 10 s with three replicas.
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${BENCH_JOBS:-100000}
DUE=${BENCH_DUE:-10000}

# shellcheck source=scripts/services.sh
source scripts/services.sh
trap stop_services EXIT
ensure_packages
start_postgres
start_redis

echo "[bench] building cairn-bench (release)" >&2
cargo build --quiet --release -p cairn-bench
BIN=${CARGO_TARGET_DIR:-target}/release/cairn-bench

db="bench_scheduler_$$"
"$(postgres_bin)/psql" -Xq -d "$TEST_POSTGRES_URL" -c "CREATE DATABASE $db"
mkdir -p "$CAIRN_SERVICES_DIR/bench-scheduler"
echo "[bench] $(nproc) cores" >&2
BENCH_DATABASE_URL="${TEST_POSTGRES_URL%/*}/$db" BENCH_REDIS_URL="$TEST_REDIS_URL" \
  BENCH_DATA_DIR="$CAIRN_SERVICES_DIR/bench-scheduler" CAIRN_LOG=warn \
  "$BIN" scheduler "$JOBS" "$DUE"

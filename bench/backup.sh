#!/usr/bin/env bash
# Backup benchmark, in one invocation:
#   1. a generated ~1 GiB file volume (log text, incompressible blobs and
#      30 000 small files) backed up by a Cairn worker to a local target,
#      next to `tar -cf - . | zstd -T0 -3 > file` of the same directory
#      (then `sync` of the file: Cairn's local target fsyncs);
#   2. the same for a ~4 GiB volume (memory must not grow with size);
#   3. a PostgreSQL database (pgbench tables) backed up by Cairn, next to
#      `pg_dump -Fc > file`.
# Prints wall times, their ratio and Cairn's peak RSS.
#
#   bench/backup.sh
#   BENCH_SMALL=268435456 BENCH_LARGE=1073741824 BENCH_PGBENCH_SCALE=5 bench/backup.sh
#
# Targets (bench/README.md): wall <= 1.15x tar|zstd; peak RSS <= 128 MiB at
# both sizes; PostgreSQL <= 1.10x pg_dump.
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL=${BENCH_SMALL:-1073741824}
LARGE=${BENCH_LARGE:-4294967296}
RUNS=${BENCH_RUNS:-3}
SCALE=${BENCH_PGBENCH_SCALE:-40}

# shellcheck source=scripts/services.sh
source scripts/services.sh
trap stop_services EXIT
ensure_packages
start_postgres

echo "[bench] building cairn-bench (release)" >&2
cargo build --quiet --release -p cairn-bench
BIN=${CARGO_TARGET_DIR:-target}/release/cairn-bench

work="$CAIRN_SERVICES_DIR/bench-backup"
mkdir -p "$work"

now() { date +%s.%N; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
drop_caches() {
  sync
  if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; fi
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# Runs one Cairn backup with a fresh data directory; prints "seconds rss".
cairn_backup() {
  rm -rf "$work/cairn-data" && mkdir -p "$work/cairn-data"
  drop_caches
  local out
  out=$(BENCH_DATA_DIR="$work/cairn-data" CAIRN_LOG=warn "$BIN" backup "$@")
  echo "$(echo "$out" | field seconds) $(echo "$out" | field peak_rss_mib)"
}

files_case() {
  local label=$1 bytes=$2 root="$work/volumes-$1"
  local volume="$root/bench-blue_data/_data"
  rm -rf "$root" && mkdir -p "$volume"
  echo "[bench] generating the $label volume ($bytes bytes)" >&2
  "$BIN" volume "$volume" "$bytes"
  local actual
  actual=$(du -sb "$volume" | cut -f1)
  local ours=() theirs=() rss=()
  for _ in $(seq "$RUNS"); do
    read -r seconds peak < <(cairn_backup files "$root")
    ours+=("$seconds"); rss+=("$peak")
    rm -f "$work/plain.tar.zst"; drop_caches
    local start end
    start=$(now)
    tar -cf - -C "$volume" . | zstd -T0 -3 -q -o "$work/plain.tar.zst"
    sync "$work/plain.tar.zst"
    end=$(now)
    theirs+=("$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }')")
  done
  local ours_m theirs_m rss_max
  ours_m=$(printf '%s\n' "${ours[@]}" | median)
  theirs_m=$(printf '%s\n' "${theirs[@]}" | median)
  rss_max=$(printf '%s\n' "${rss[@]}" | sort -n | tail -n 1)
  printf '%-9s volume %6.2f GiB  cairn %7.2f s  tar|zstd %7.2f s  ratio %.2f (target <= 1.15)  cairn peak RSS %6.1f MiB (target <= 128)\n' \
    "$label" "$(awk -v b="$actual" 'BEGIN { print b / 1073741824 }')" "$ours_m" "$theirs_m" \
    "$(awk -v a="$ours_m" -v b="$theirs_m" 'BEGIN { print a / b }')" "$rss_max"
  rm -rf "$root"
}

postgres_case() {
  local bin url db="bench_$$"
  bin=$(postgres_bin)
  url="$TEST_POSTGRES_URL"
  "$bin/psql" -Xq -d "$url" -c "CREATE DATABASE $db"
  local db_url="${url%/*}/$db"
  echo "[bench] pgbench -i -s $SCALE" >&2
  "$bin/pgbench" -q -i -s "$SCALE" "$db_url" >/dev/null 2>&1
  local size
  size=$("$bin/psql" -XAt -d "$db_url" -c "SELECT pg_database_size(current_database())")
  # scheme://user:password@host:port/db
  local rest=${url#*://} user password hostport host port
  user=${rest%%:*}; rest=${rest#*:}; password=${rest%%@*}; rest=${rest#*@}
  hostport=${rest%%/*}; host=${hostport%%:*}; port=${hostport##*:}
  local ours=() theirs=() rss=()
  for _ in $(seq "$RUNS"); do
    read -r seconds peak < <(PGPASSWORD="$password" BENCH_PG_DUMP="$bin/pg_dump" cairn_backup postgres "$host" "$port" "$db" "$user")
    ours+=("$seconds"); rss+=("$peak")
    rm -f "$work/plain.dump"; drop_caches
    local start end
    start=$(now)
    PGPASSWORD="$password" "$bin/pg_dump" -Fc -h "$host" -p "$port" -U "$user" -d "$db" >"$work/plain.dump"
    sync "$work/plain.dump"
    end=$(now)
    theirs+=("$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }')")
  done
  local ours_m theirs_m rss_max
  ours_m=$(printf '%s\n' "${ours[@]}" | median)
  theirs_m=$(printf '%s\n' "${theirs[@]}" | median)
  rss_max=$(printf '%s\n' "${rss[@]}" | sort -n | tail -n 1)
  printf '%-9s database %5.2f GiB  cairn %7.2f s  pg_dump -Fc %7.2f s  ratio %.2f (target <= 1.10)  cairn peak RSS %6.1f MiB\n' \
    "postgres" "$(awk -v b="$size" 'BEGIN { print b / 1073741824 }')" "$ours_m" "$theirs_m" \
    "$(awk -v a="$ours_m" -v b="$theirs_m" 'BEGIN { print a / b }')" "$rss_max"
}

echo "[bench] $(nproc) cores, median of $RUNS runs each" >&2
files_case 1GiB "$SMALL"
files_case 4GiB "$LARGE"
postgres_case

#!/usr/bin/env bash
# Backup benchmark, in one invocation:
#   1. a generated ~1 GiB file volume (log text, incompressible blobs and
#      30 000 small files) backed up by a Cairn worker to a local target,
#      next to `tar -cf - . | zstd -T0 -3 > file` of the same directory
#      (then `sync` of the file: Cairn's local target fsyncs);
#   2. copies: the same ~1 GiB volume backed up by a Cairn worker to the
#      local target alone, next to the same backup to the local primary
#      plus a copy on an S3 target (s3s-fs on loopback) in the same run;
#   3. the same as 1 for a ~4 GiB volume (memory must not grow with size);
#   4. a PostgreSQL database (pgbench tables) backed up by Cairn, next to
#      `pg_dump -Fc > file`;
#   5. a MariaDB database (~1 GiB of rows: text, numbers, dates) backed up
#      by Cairn, next to `mariadb-dump --single-transaction | zstd -T0 -3 >
#      file`.
# Prints wall times, their ratio and Cairn's peak RSS.
#
#   bench/backup.sh
#   BENCH_SMALL=268435456 BENCH_LARGE=1073741824 BENCH_PGBENCH_SCALE=5 bench/backup.sh
#   BENCH_CASES=copies bench/backup.sh      # only some cases: small copies large postgres mysql
#   BENCH_MYSQL_ROWS=500000 BENCH_CASES=mysql bench/backup.sh
#
# Targets (bench/README.md): wall <= 1.15x tar|zstd; peak RSS <= 128 MiB at
# both sizes; PostgreSQL <= 1.10x pg_dump; with an S3 copy <= 1.25x the
# local-only backup and peak RSS <= 128 MiB; MariaDB <= 1.10x
# mariadb-dump | zstd and peak RSS <= 128 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL=${BENCH_SMALL:-1073741824}
LARGE=${BENCH_LARGE:-4294967296}
RUNS=${BENCH_RUNS:-3}
SCALE=${BENCH_PGBENCH_SCALE:-40}
MYSQL_ROWS=${BENCH_MYSQL_ROWS:-4000000}
CASES=${BENCH_CASES:-small copies large postgres mysql}
for case in $CASES; do
  case $case in
    small | copies | large | postgres | mysql) ;;
    *) echo "unknown case '$case' in BENCH_CASES: small, copies, large, postgres, mysql" >&2; exit 2 ;;
  esac
done
selected() { [[ " $CASES " == *" $1 "* ]]; }

# shellcheck source=scripts/services.sh
source scripts/services.sh
trap stop_services EXIT
ensure_packages
if selected postgres; then start_postgres; fi
if selected mysql; then start_mariadb; fi

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
  out=$(BENCH_DATA_DIR="$work/cairn-data" CAIRN_LOG=warn "$BIN" backup "$@") || return 1
  echo "$(echo "$out" | field seconds) $(echo "$out" | field peak_rss_mib)"
}

# Generates the volume bench-blue_data of about $2 bytes under the root $1.
generate_volume() {
  local root=$1 bytes=$2 volume="$1/bench-blue_data/_data"
  rm -rf "$root" && mkdir -p "$volume"
  echo "[bench] generating a volume of $bytes bytes" >&2
  "$BIN" volume "$volume" "$bytes"
}

files_case() {
  local label=$1 bytes=$2 root="$work/volumes-$1"
  local volume="$root/bench-blue_data/_data"
  generate_volume "$root" "$bytes"
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

# From s3s-fs's debug log of one upload (on stdin): the seconds from its
# last part stored to its last part copied into the object — on completion
# s3s-fs reads every part back into a new file while the uploader waits.
s3s_completion_seconds() {
  awk '
    function secs(ts, t, h) { split(ts, t, "T"); split(t[2], h, ":"); return h[1] * 3600 + h[2] * 60 + h[3] }
    /DEBUG s3s_fs::s3: write file, path: .*\.upload_id-/ { last_part = secs($1) }
    /DEBUG s3s_fs::s3: write file, from: .*\.upload_id-/ { last_copy = secs($1) }
    END { printf "%.3f", (last_part && last_copy) ? last_copy - last_part : 0 }'
}

# The ~1 GiB volume backed up to the local target alone, and to the local
# primary plus a copy on S3 (s3s-fs on loopback): one read of the volume
# fanned out to both. The bucket is emptied before each copy run.
copies_case() {
  local bytes=$1 root="$work/volumes-copies"
  local volume="$root/bench-blue_data/_data"
  # Debug lines say when each part and the completion were stored.
  RUST_LOG=s3s_fs::s3=debug start_s3
  local bucket="$TEST_S3_ROOT/$TEST_S3_BUCKET" server_log="$CAIRN_SERVICES_DIR/s3/server.log"
  empty_bucket() {
    # The bucket's objects, and what s3s-fs keeps beside them (metadata,
    # parts of unfinished uploads); the bucket itself stays.
    find "$bucket" -mindepth 1 -delete
    find "$TEST_S3_ROOT" -mindepth 1 -maxdepth 1 -name '.*' -delete
    sync
  }
  generate_volume "$root" "$bytes"
  local actual
  actual=$(du -sb "$volume" | cut -f1)
  local alone=() copied=() rss_alone=() rss=() completion=() streamed=()
  for run in $(seq "$RUNS"); do
    local result logged
    # (An assignment, not `read < <(…)`: a failed backup stops the script.)
    result=$(cairn_backup files "$root")
    read -r seconds peak <<<"$result"
    alone+=("$seconds"); rss_alone+=("$peak")
    empty_bucket
    logged=$(wc -l <"$server_log")
    result=$(cairn_backup files "$root" --s3-copy)
    read -r seconds peak <<<"$result"
    copied+=("$seconds"); rss+=("$peak")
    completion+=("$(tail -n +"$((logged + 1))" "$server_log" | s3s_completion_seconds)")
    streamed+=("$(awk -v a="$seconds" -v c="${completion[-1]}" 'BEGIN { printf "%.3f", a - c }')")
    echo "[bench] run $run: local ${alone[-1]} s (${rss_alone[-1]} MiB), local+s3 $seconds s ($peak MiB), of which s3s-fs completing the upload ${completion[-1]} s" >&2
    # The copy must be in the bucket, as big as the primary's archive.
    local primary s3
    primary=$(find "$work/cairn-data" -name '*.tar.zst' -type f -printf '%s\n' | head -n 1)
    s3=$(find "$bucket" -name '*.tar.zst' -type f -printf '%s\n' | head -n 1)
    if [ -z "$primary" ] || [ "$primary" != "$s3" ]; then
      echo "[bench] the S3 copy (${s3:-none} bytes) is not the primary's archive (${primary:-none} bytes)" >&2
      return 1
    fi
    empty_bucket
  done
  local alone_m copied_m completion_m streamed_m rss_max rss_alone_max
  alone_m=$(printf '%s\n' "${alone[@]}" | median)
  copied_m=$(printf '%s\n' "${copied[@]}" | median)
  completion_m=$(printf '%s\n' "${completion[@]}" | median)
  streamed_m=$(printf '%s\n' "${streamed[@]}" | median)
  rss_max=$(printf '%s\n' "${rss[@]}" | sort -n | tail -n 1)
  rss_alone_max=$(printf '%s\n' "${rss_alone[@]}" | sort -n | tail -n 1)
  printf '%-9s volume %6.2f GiB  local %7.2f s  local+s3 %7.2f s  ratio %.2f (target <= 1.25)  local+s3 peak RSS %6.1f MiB (target <= 128; local alone %.1f)\n' \
    "copies" "$(awk -v b="$actual" 'BEGIN { print b / 1073741824 }')" "$alone_m" "$copied_m" \
    "$(awk -v a="$copied_m" -v b="$alone_m" 'BEGIN { print a / b }')" "$rss_max" "$rss_alone_max"
  printf '%-9s of local+s3, s3s-fs copying the parts into the object at completion %.2f s; without it %.2f s, ratio %.2f\n' \
    "" "$completion_m" "$streamed_m" "$(awk -v a="$streamed_m" -v b="$alone_m" 'BEGIN { print a / b }')"
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

mysql_case() {
  local db="bench_$$" rest password port
  rest=${TEST_MYSQL_URL#mysql://root:}
  password=${rest%@*}
  port=${TEST_MYSQL_URL##*:}
  my() { MYSQL_PWD="$password" mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P"$port" -uroot "$@"; }
  echo "[bench] a MariaDB database of $MYSQL_ROWS orders" >&2
  my -e "CREATE DATABASE $db"
  my "$db" -e "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer VARCHAR(64) NOT NULL,
      note TEXT NOT NULL, amount DECIMAL(12,2) NOT NULL, created DATETIME NOT NULL) ENGINE=InnoDB;
    INSERT INTO orders SELECT seq, CONCAT('customer-', seq MOD 9973),
      CONCAT(MD5(seq), ' order note ', REPEAT(SHA1(seq), 3), ' it''s "quoted"; (x)'),
      (seq MOD 100000) / 100, '2026-01-01' + INTERVAL (seq MOD 31536000) SECOND
      FROM seq_1_to_$MYSQL_ROWS;"
  local size
  size=$(my -N -e "SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '$db'")
  local ours=() theirs=() rss=()
  for _ in $(seq "$RUNS"); do
    read -r seconds peak < <(MYSQL_PWD="$password" cairn_backup mysql 127.0.0.1 "$port" "$db" root)
    ours+=("$seconds"); rss+=("$peak")
    rm -f "$work/plain.sql.zst"; drop_caches
    local start end
    start=$(now)
    MYSQL_PWD="$password" mariadb-dump --no-defaults --protocol=TCP -h127.0.0.1 -P"$port" -uroot \
      --single-transaction --routines --triggers --events --hex-blob --quick "$db" \
      | zstd -T0 -3 -q -o "$work/plain.sql.zst"
    sync "$work/plain.sql.zst"
    end=$(now)
    theirs+=("$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }')")
  done
  local ours_m theirs_m rss_max
  ours_m=$(printf '%s\n' "${ours[@]}" | median)
  theirs_m=$(printf '%s\n' "${theirs[@]}" | median)
  rss_max=$(printf '%s\n' "${rss[@]}" | sort -n | tail -n 1)
  printf '%-9s database %5.2f GiB  cairn %7.2f s  mariadb-dump|zstd %7.2f s  ratio %.2f (target <= 1.10)  cairn peak RSS %6.1f MiB (target <= 128)\n' \
    "mysql" "$(awk -v b="$size" 'BEGIN { print b / 1073741824 }')" "$ours_m" "$theirs_m" \
    "$(awk -v a="$ours_m" -v b="$theirs_m" 'BEGIN { print a / b }')" "$rss_max"
  my -e "DROP DATABASE $db"
}

echo "[bench] $(nproc) cores, median of $RUNS runs each; cases: $CASES" >&2
if selected small; then files_case 1GiB "$SMALL"; fi
if selected copies; then copies_case "$SMALL"; fi
if selected large; then files_case 4GiB "$LARGE"; fi
if selected postgres; then postgres_case; fi
if selected mysql; then mysql_case; fi

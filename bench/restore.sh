#!/usr/bin/env bash
# Restore benchmark: the generated ~1 GiB file volume is backed up once by
# a Cairn worker to a local target (zstd), then, RUNS times each, restored
#   - by a Cairn worker into the volume (no safety backup: extract into a
#     staging directory, flush, swap the entries, delete the old ones), and
#   - by `rm -rf` of the volume's entries, then `zstd -dc ARCHIVE | tar -x`
#     of the same archive into it, then `sync` (Cairn flushes before it
#     swaps);
# each starting from the full volume with caches dropped. Prints the
# medians, their ratio and Cairn's peak RSS during the restore.
#
#   bench/restore.sh
#   BENCH_SMALL=268435456 BENCH_RUNS=1 bench/restore.sh
#
# Targets (bench/README.md): wall <= 1.2x zstd -dc | tar -x; peak RSS <= 128 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL=${BENCH_SMALL:-1073741824}
RUNS=${BENCH_RUNS:-3}

# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_packages

echo "[bench] building cairn-bench (release)" >&2
cargo build --quiet --release -p cairn-bench
BIN=${CARGO_TARGET_DIR:-target}/release/cairn-bench

work="$CAIRN_SERVICES_DIR/bench-restore"
rm -rf "$work" && mkdir -p "$work"
trap 'rm -rf "$work"; rmdir "$CAIRN_SERVICES_DIR" 2>/dev/null || true' EXIT

now() { date +%s.%N; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
drop_caches() {
  sync
  if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; fi
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

root="$work/volumes"
volume="$root/bench-blue_data/_data"
mkdir -p "$volume"
echo "[bench] generating the volume ($SMALL bytes)" >&2
"$BIN" volume "$volume" "$SMALL"
actual=$(du -sb "$volume" | cut -f1)
echo "[bench] backing it up once" >&2
BENCH_DATA_DIR="$work/cairn-data" CAIRN_LOG=warn "$BIN" backup files "$root" >/dev/null
archive=$(find "$work/cairn-data/backups" -name '*.tar.zst' | head -n 1)
files=$(find "$volume" | wc -l)

ours=() theirs=() rss=()
for _ in $(seq "$RUNS"); do
  drop_caches
  out=$(BENCH_DATA_DIR="$work/cairn-data" CAIRN_LOG=warn "$BIN" restore files "$root")
  ours+=("$(echo "$out" | field seconds)"); rss+=("$(echo "$out" | field peak_rss_mib)")
  restored=$(find "$volume" | wc -l)
  [ "$restored" = "$files" ] || { echo "cairn restored $restored entries, expected $files" >&2; exit 1; }

  drop_caches
  start=$(now)
  find "$volume" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  zstd -dc -q "$archive" | tar -xf - -C "$volume"
  sync
  end=$(now)
  theirs+=("$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }')")
  restored=$(find "$volume" | wc -l)
  [ "$restored" = "$files" ] || { echo "tar restored $restored entries, expected $files" >&2; exit 1; }
done

ours_m=$(printf '%s\n' "${ours[@]}" | median)
theirs_m=$(printf '%s\n' "${theirs[@]}" | median)
rss_max=$(printf '%s\n' "${rss[@]}" | sort -n | tail -n 1)
echo "[bench] $(nproc) cores, median of $RUNS runs, $files entries" >&2
printf 'restore   volume %6.2f GiB  cairn %7.2f s  zstd -dc|tar -x %7.2f s  ratio %.2f (target <= 1.2)  cairn peak RSS %6.1f MiB (target <= 128)\n' \
  "$(awk -v b="$actual" 'BEGIN { print b / 1073741824 }')" "$ours_m" "$theirs_m" \
  "$(awk -v a="$ours_m" -v b="$theirs_m" 'BEGIN { print a / b }')" "$rss_max"

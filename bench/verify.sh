#!/usr/bin/env bash
# Verification benchmark: the generated ~1 GiB file volume is backed up
# once by a Cairn worker to a local target (zstd), then, RUNS times each,
#   - verified by a Cairn worker in restore mode (download and SHA-256 of
#     the archive, zstd decompression, checked extraction into a directory
#     of its own under the scratch directory, the counts compared with the
#     manifest, the directory removed), and
#   - by `zstd -dc ARCHIVE | tar -x` of the same archive into a fresh
#     directory under the same scratch directory, then `rm -rf` of it
#     (Cairn removes its scratch directory too);
# alternating, with caches dropped before each. Prints the medians, their
# ratio and Cairn's peak RSS during the verification.
#
#   bench/verify.sh
#   BENCH_BYTES=134217728 BENCH_RUNS=1 bench/verify.sh
#
# Targets (bench/README.md): wall <= 1.2x zstd -dc | tar -x; peak RSS <= 128 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."

BYTES=${BENCH_BYTES:-1073741824}
RUNS=${BENCH_RUNS:-3}

# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_packages

echo "[bench] building cairn-bench (release)" >&2
cargo build --quiet --release -p cairn-bench
BIN=${CARGO_TARGET_DIR:-target}/release/cairn-bench

work="$CAIRN_SERVICES_DIR/bench-verify"
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
scratch="$work/scratch"
mkdir -p "$volume" "$scratch"
echo "[bench] generating the volume ($BYTES bytes)" >&2
"$BIN" volume "$volume" "$BYTES"
actual=$(du -sb "$volume" | cut -f1)
echo "[bench] backing it up once" >&2
BENCH_DATA_DIR="$work/cairn-data" CAIRN_LOG=warn "$BIN" backup files "$root" >/dev/null
archive=$(find "$work/cairn-data/backups" -name '*.tar.zst' | head -n 1)
files=$(find "$volume" | wc -l)

ours=() theirs=() rss=()
for _ in $(seq "$RUNS"); do
  drop_caches
  out=$(BENCH_DATA_DIR="$work/cairn-data" CAIRN_LOG=warn "$BIN" verify files "$scratch")
  ours+=("$(echo "$out" | field seconds)"); rss+=("$(echo "$out" | field peak_rss_mib)")
  left=$(find "$scratch" -mindepth 1 | wc -l)
  [ "$left" = 0 ] || { echo "cairn left $left entries in $scratch" >&2; exit 1; }

  # The count between extraction and removal is not timed.
  plain="$scratch/plain"
  drop_caches
  start=$(now)
  mkdir "$plain"
  zstd -dc -q "$archive" | tar -xf - -C "$plain"
  end=$(now)
  extracted=$(find "$plain" | wc -l)
  [ "$extracted" = "$files" ] || { echo "tar extracted $extracted entries, expected $files" >&2; exit 1; }
  start2=$(now)
  rm -rf "$plain"
  end2=$(now)
  theirs+=("$(awk -v s="$start" -v e="$end" -v s2="$start2" -v e2="$end2" 'BEGIN { printf "%.3f", e - s + e2 - s2 }')")
done

ours_m=$(printf '%s\n' "${ours[@]}" | median)
theirs_m=$(printf '%s\n' "${theirs[@]}" | median)
rss_max=$(printf '%s\n' "${rss[@]}" | sort -n | tail -n 1)
echo "[bench] $(nproc) cores, median of $RUNS runs, $files entries" >&2
printf 'verify    volume %6.2f GiB  cairn %7.2f s  zstd -dc|tar -x, rm -rf %7.2f s  ratio %.2f (target <= 1.2)  cairn peak RSS %6.1f MiB (target <= 128)\n' \
  "$(awk -v b="$actual" 'BEGIN { print b / 1073741824 }')" "$ours_m" "$theirs_m" \
  "$(awk -v a="$ours_m" -v b="$theirs_m" 'BEGIN { print a / b }')" "$rss_max"

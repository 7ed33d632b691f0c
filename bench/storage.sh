#!/usr/bin/env bash
# Storage benchmark: a generated object (1 GiB by default) written and read
# back through each adapter on loopback — local, S3 (s3s-fs), SSH (sshd) —
# next to the same bytes moved by a plain tool in the same run (cp and dd,
# the AWS CLI, sftp), with the adapter's peak memory. Page caches are
# dropped before each read where the machine allows it (root).
#
#   bench/storage.sh                 # 1 GiB
#   BENCH_BYTES=268435456 bench/storage.sh
#
# Targets (bench/README.md): >= 85% of the plain tool's throughput, peak
# memory under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."

BYTES=${BENCH_BYTES:-1073741824}

# shellcheck source=scripts/services.sh
source scripts/services.sh
trap stop_services EXIT
ensure_packages
start_s3
start_sshd

echo "[bench] building cairn-bench (release)" >&2
cargo build --quiet --release -p cairn-bench
BIN=${CARGO_TARGET_DIR:-target}/release/cairn-bench

work="$CAIRN_SERVICES_DIR/bench"
mkdir -p "$work/local"
export BENCH_LOCAL_DIR="$work/local"
source_file="$work/source.bin"
"$BIN" generate "$source_file" "$BYTES"

now() { date +%s.%N; }
mib_per_s() { awk -v b="$BYTES" -v s="$1" -v e="$2" 'BEGIN { printf "%.1f", b / 1048576 / (e - s) }'; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

# Plain tools, one function per adapter and direction.
plain_local_write() { cp "$source_file" "$work/plain.bin" && sync "$work/plain.bin"; }
plain_local_read() { dd if="$work/plain.bin" of=/dev/null bs=1M status=none; }
# The AWS CLI (from PyPI, in a virtualenv kept with the test tools): the
# S3 client operators use, multipart and parallel like the adapter.
aws_cli() {
  local venv="$CAIRN_TOOLS_DIR/awscli"
  if [ ! -x "$venv/bin/aws" ]; then
    echo "[bench] installing the AWS CLI from PyPI (once)" >&2
    python3 -m venv "$venv" && "$venv/bin/pip" install --quiet awscli >&2
  fi
  printf '[default]\ns3 =\n    addressing_style = path\n' >"$work/aws-config"
  AWS_CONFIG_FILE="$work/aws-config" AWS_ACCESS_KEY_ID="$TEST_S3_ACCESS_KEY" \
    AWS_SECRET_ACCESS_KEY="$TEST_S3_SECRET_KEY" AWS_DEFAULT_REGION=us-east-1 \
    "$venv/bin/aws" --endpoint-url "$TEST_S3_ENDPOINT" "$@"
}
plain_s3_write() { aws_cli s3 cp --quiet "$source_file" "s3://$TEST_S3_BUCKET/plain.bin"; }
plain_s3_read() { aws_cli s3 cp --quiet "s3://$TEST_S3_BUCKET/plain.bin" - >/dev/null; }
sftp_batch() {
  sftp -q -b - -i "$TEST_SSH_KEY" -P "$TEST_SSH_PORT" -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "$TEST_SSH_USER@$TEST_SSH_HOST" >/dev/null
}
plain_ssh_write() { echo "put $source_file $TEST_SSH_ROOT/plain.bin" | sftp_batch; }
plain_ssh_read() { echo "get $TEST_SSH_ROOT/plain.bin $work/sftp-read.bin" | sftp_batch; rm -f "$work/sftp-read.bin"; }

declare -A tool=([local]="cp+sync / dd" [s3]="aws s3 cp" [ssh]="sftp")
printf '\nStorage benchmark: %s MiB per transfer, loopback, %s\n' "$((BYTES / 1048576))" "$(nproc) cores"
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
# Every write starts from the same state: no earlier copy to replace, and
# nothing left to write back from the previous transfer. $1: object.bin
# (the adapter's) or plain.bin (the tool's).
fresh_destinations() {
  rm -f "$BENCH_LOCAL_DIR/bench/$1" "$work/$1" "$TEST_SSH_ROOT/bench/$1" "$TEST_SSH_ROOT/$1" \
    "$TEST_S3_ROOT/$TEST_S3_BUCKET/bench/$1" "$TEST_S3_ROOT/$TEST_S3_BUCKET/$1"
  sync
}
prepare() { if [ "$1" = read ]; then drop_caches; else fresh_destinations "$2"; fi; }
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
RUNS=${BENCH_RUNS:-5}
printf '(median of %s runs each, ours and the tool alternating)\n\n' "$RUNS"
printf '%-6s %-6s %12s %12s %8s %14s  %s\n' adapter dir "cairn MiB/s" "tool MiB/s" ratio "cairn peak MiB" tool
for adapter in local s3 ssh; do
  for direction in write read; do
    ours=() theirs=() peak=0
    for _ in $(seq "$RUNS"); do
      prepare "$direction" object.bin
      line=$("$BIN" storage "$adapter" "$direction" "$BYTES")
      ours+=("$(field mib_per_s <<<"$line")")
      peak=$(awk -v a="$peak" -v b="$(field peak_rss_mib <<<"$line")" 'BEGIN { print (b > a) ? b : a }')
      prepare "$direction" plain.bin
      start=$(now)
      "plain_${adapter}_${direction}"
      end=$(now)
      theirs+=("$(mib_per_s "$start" "$end")")
    done
    a=$(printf '%s\n' "${ours[@]}" | median)
    b=$(printf '%s\n' "${theirs[@]}" | median)
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.0f%%", 100 * a / b }')
    printf '%-6s %-6s %12s %12s %8s %14s  %s\n' "$adapter" "$direction" "$a" "$b" "$ratio" "$peak" "${tool[$adapter]}"
  done
done

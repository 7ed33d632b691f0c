#!/usr/bin/env bash
# End-to-end backup benchmark, as a user sees it: a real `cairn serve`
# (release build, the embedded default: SQLite, local target, API,
# scheduler and worker in one process) is started on a fresh data
# directory; an app and a job are created through the API; a run is
# requested (`POST …/jobs/{id}/run`) and the record polled every 10 ms until
# it says `success`. That wall time is compared with `tar -cf - . | zstd
# -T0 -3 > file; sync file` of the same tree in the same run, the two
# alternating, page caches dropped before each when run as root; the
# median of several pairs is printed, with the ratio and the serve
# process's peak resident memory (VmHWM) over the whole run.
#
#   bench/e2e.sh
#   BENCH_SIZES="268435456" BENCH_RUNS=3 bench/e2e.sh
#
# Targets (bench/README.md): ratio <= 1.15; peak RSS <= 128 MiB at 1 GiB
# and at 4 GiB.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${BENCH_SIZES:-1073741824 4294967296}
RUNS=${BENCH_RUNS:-5}

# shellcheck source=scripts/services.sh
source scripts/services.sh
trap 'stop_serve; stop_services' EXIT
ensure_packages

echo "[bench] building cairn and cairn-bench (release)" >&2
cargo build --quiet --release --bin cairn
cargo build --quiet --release -p cairn-bench
TARGET=${CARGO_TARGET_DIR:-target}/release
work="$CAIRN_SERVICES_DIR/bench-e2e"
mkdir -p "$work"

now() { date +%s.%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
drop_caches() {
  sync
  if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; fi
}

SERVE_PID=""
stop_serve() {
  if [ -n "$SERVE_PID" ]; then
    kill "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=""
  fi
}

# One backup through a fresh `cairn serve` over the volume root $1; prints
# "seconds peak_rss_mib".
serve_backup() {
  local root=$1 port token
  port=$(free_port)
  token="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  rm -rf "$work/data" && mkdir -p "$work/data"
  CAIRN_DATA_DIR="$work/data" CAIRN_LISTEN="127.0.0.1:$port" CAIRN_ADMIN_TOKEN="$token" \
    CAIRN_VOLUME_ROOT="$root" CAIRN_LOG=warn "$TARGET/cairn" serve >"$work/serve.log" 2>&1 &
  SERVE_PID=$!
  wait_for_port "$port" cairn || { cat "$work/serve.log" >&2; return 1; }
  drop_caches
  local seconds
  seconds=$(BENCH_URL="http://127.0.0.1:$port" BENCH_TOKEN="$token" python3 - <<'PY'
import json, os, sys, time, urllib.request

url, admin = os.environ["BENCH_URL"], os.environ["BENCH_TOKEN"]

def call(method, path, token, body=None):
    request = urllib.request.Request(
        url + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as reply:
        return json.loads(reply.read() or b"null")

org = call("POST", "/api/v1/organizations", admin, {"slug": "bench", "name": "Bench"})["id"]
base = f"/api/v1/organizations/{org}"
token = call("POST", base + "/tokens", admin, {"name": "bench", "role": "admin"})["token"]
app = call("POST", base + "/apps", token, {"name": "bench", "volumes": [{"name": "data"}]})["id"]
job = call("POST", base + "/backups/jobs", token,
           {"name": "bench", "schedule": "0 3 * * *", "appIds": [app], "keepLast": 3})["id"]
started = time.monotonic()
run = call("POST", f"{base}/backups/jobs/{job}/run", token, {})
backup = run["backups"][0]["id"]
while True:
    record = call("GET", f"{base}/backups/history/{backup}", token)
    if record["status"] not in ("pending", "running"):
        break
    time.sleep(0.01)
elapsed = time.monotonic() - started
if record["status"] != "success":
    sys.exit(f"the backup ended {record['status']}: {record.get('errorMessage')}")
print(f"{elapsed:.3f}")
PY
  )
  local peak
  peak=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$SERVE_PID/status")
  stop_serve
  echo "$seconds $peak"
}

size_case() {
  local bytes=$1 root="$work/volumes"
  local volume="$root/bench-blue_data/_data"
  rm -rf "$root" && mkdir -p "$volume"
  echo "[bench] generating a volume of $bytes bytes" >&2
  "$TARGET/cairn-bench" volume "$volume" "$bytes"
  local actual
  actual=$(du -sb "$volume" | cut -f1)
  local ours=() theirs=() rss=()
  for run in $(seq "$RUNS"); do
    local result
    result=$(serve_backup "$root")
    read -r seconds peak <<<"$result"
    ours+=("$seconds"); rss+=("$peak")
    rm -f "$work/plain.tar.zst"; drop_caches
    local start end
    start=$(now)
    tar -cf - -C "$volume" . | zstd -T0 -3 -q -o "$work/plain.tar.zst"
    sync "$work/plain.tar.zst"
    end=$(now)
    theirs+=("$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }')")
    echo "[bench] run $run: cairn serve ${ours[-1]} s (peak ${rss[-1]} MiB), tar|zstd ${theirs[-1]} s" >&2
  done
  local ours_m theirs_m rss_max
  ours_m=$(printf '%s\n' "${ours[@]}" | median)
  theirs_m=$(printf '%s\n' "${theirs[@]}" | median)
  rss_max=$(printf '%s\n' "${rss[@]}" | sort -n | tail -n 1)
  printf 'e2e       volume %6.2f GiB  request->success %7.2f s  tar|zstd;sync %7.2f s  ratio %.2f (target <= 1.15)  cairn serve peak RSS %6.1f MiB (target <= 128)\n' \
    "$(awk -v b="$actual" 'BEGIN { print b / 1073741824 }')" "$ours_m" "$theirs_m" \
    "$(awk -v a="$ours_m" -v b="$theirs_m" 'BEGIN { print a / b }')" "$rss_max"
  rm -rf "$root"
}

echo "[bench] $(nproc) cores, median of $RUNS pairs per size" >&2
for size in $SIZES; do size_case "$size"; done

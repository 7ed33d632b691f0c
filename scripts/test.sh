#!/usr/bin/env bash
# The test command of the README: installs and starts the real services the
# tests need on loopback — PostgreSQL, MariaDB, OpenSSH, Redis and Chromium
# (with chromedriver) from Debian's packages, the
# S3 server s3s-fs from crates.io — runs every test of the workspace against
# them (and aiosmtpd from PyPI as the SMTP server), stops them, and ends
# with one summary line. Extra arguments go to
# `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/services.sh
source scripts/services.sh
trap stop_services EXIT

ensure_packages
start_postgres
start_mariadb
start_s3
start_sshd
start_redis
start_smtp
start_chromedriver

output="$CAIRN_SERVICES_DIR/cargo-test.log"
set +e
cargo test --workspace --all-targets --no-fail-fast "$@" 2>&1 | tee "$output"
status=${PIPESTATUS[0]}
set -e

# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1); if ($(i) ~ /^ignored/) s += $(i-1) } }
     END { printf "cairn tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$output"
exit "$status"

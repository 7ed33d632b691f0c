#!/usr/bin/env bash
# Checks docker/docker-compose.yml with `docker-compose config` (Debian's
# docker-compose package, installed when missing). No Docker engine needed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker-compose >/dev/null; then
  echo "[check-docker] installing docker-compose from Debian packages" >&2
  if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
# The file requires these; any value does for a syntax check.
CAIRN_MASTER_KEY=check CAIRN_ADMIN_TOKEN=check S3_SECRET_KEY=check \
  docker-compose -f docker/docker-compose.yml config -q
echo "docker/docker-compose.yml is valid"
test -s docker/Dockerfile

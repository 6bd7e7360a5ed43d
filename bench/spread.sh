#!/usr/bin/env bash
# How evenly the centralized worker pool spreads live load, per balancer.
#
# Starts `tickhttp serve --mode centralized` once with round-robin and once with
# least-connections, drives it with clients that send a skewed mix of /sleep requests (a few
# long, many short, each on a new connection), samples the master's status endpoint for the
# in-flight connections of every worker, and prints the spread (busiest worker minus idlest)
# for both runs.
#
#   bench/spread.sh
#   WORKERS=4 CLIENTS=24 DURATION=15 LONG_PCT=10 bench/spread.sh
#
# Knobs (environment):
#   WORKERS    worker processes [4]
#   CLIENTS    concurrent client loops [16]
#   DURATION   seconds of load per balancer [10]
#   LONG_MS    duration of a long request [2000]
#   SHORT_MS   duration of a short request [10]
#   LONG_PCT   percent of requests that are long [20]
#   SAMPLE_MS  sampling period of the status endpoint [100]
#   BALANCERS  balancers to compare [round-robin least-connections]
#   PORT       base port; the status endpoint uses PORT+1 [18600]
#   BUILD      0 to skip `cargo build --release` [1]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORKERS=${WORKERS:-4}
CLIENTS=${CLIENTS:-16}
DURATION=${DURATION:-10}
LONG_MS=${LONG_MS:-2000}
SHORT_MS=${SHORT_MS:-10}
LONG_PCT=${LONG_PCT:-20}
SAMPLE_MS=${SAMPLE_MS:-100}
BALANCERS=${BALANCERS:-round-robin least-connections}
PORT=${PORT:-18600}
BUILD=${BUILD:-1}
TICKHTTP=${CARGO_TARGET_DIR:-$ROOT/target}/release/tickhttp

die() { echo "spread.sh: $*" >&2; exit 1; }
command -v curl >/dev/null || die "needs curl"
for v in WORKERS CLIENTS DURATION LONG_MS SHORT_MS LONG_PCT SAMPLE_MS PORT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
if [[ $BUILD == 1 ]]; then
  (cd "$ROOT" && cargo build --release -q -p tickhttp-cli)
fi
[[ -x $TICKHTTP ]] || die "no $TICKHTTP (build it, or drop BUILD=0)"
PAUSE=$(awk -v m="$SAMPLE_MS" 'BEGIN { print m / 1000 }')

SERVER_PID=
CLIENT_PIDS=()
cleanup() {
  for p in "${CLIENT_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=
  CLIENT_PIDS=()
}
trap cleanup EXIT

client() { # client loop: skewed /sleep requests, one connection each, until killed
  local url=$1 n=0
  while :; do
    local ms=$SHORT_MS
    if ((RANDOM % 100 < LONG_PCT)); then ms=$LONG_MS; fi
    curl -s -o /dev/null -H 'Connection: close' "$url/sleep?ms=$ms" || true
    n=$((n + 1))
  done
}

run() { # run BALANCER -> prints "samples mean_spread max_spread mean_inflight dispatched"
  local balancer=$1 status="http://127.0.0.1:$((PORT + 1))/"
  "$TICKHTTP" serve --listen "127.0.0.1:$PORT" --status-listen "127.0.0.1:$((PORT + 1))" \
    --mode centralized --workers "$WORKERS" --balancer "$balancer" --log warn &
  SERVER_PID=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "$status" && break; sleep 0.05; done
  curl -sf -o /dev/null "$status" || die "the pool did not start"
  for _ in $(seq "$CLIENTS"); do
    client "http://127.0.0.1:$PORT" &
    CLIENT_PIDS+=($!)
  done
  sleep 0.5 # let the load settle
  local samples=0 sum_spread=0 max_spread=0 sum_inflight=0 end=$((SECONDS + DURATION)) json
  while ((SECONDS < end)); do
    json=$(curl -sf "$status") || continue
    local counts min=-1 max=0 total=0 c
    counts=$(grep -o '"connections":[0-9]*' <<<"$json" | cut -d: -f2)
    for c in $counts; do
      ((min < 0 || c < min)) && min=$c
      ((c > max)) && max=$c
      total=$((total + c))
    done
    samples=$((samples + 1))
    sum_spread=$((sum_spread + max - min))
    ((max - min > max_spread)) && max_spread=$((max - min))
    sum_inflight=$((sum_inflight + total))
    sleep "$PAUSE"
  done
  json=$(curl -sf "$status")
  local dispatched
  dispatched=$(grep -o '"dispatched":[0-9]*' <<<"$json" | cut -d: -f2)
  cleanup
  awk -v s="$samples" -v ss="$sum_spread" -v ms="$max_spread" -v si="$sum_inflight" \
    -v w="$WORKERS" -v d="$dispatched" \
    'BEGIN { printf "%d %.2f %d %.2f %d\n", s, ss / s, ms, si / s / w, d }'
}

echo "# Centralized pool: spread of in-flight requests over workers"
echo
echo "$WORKERS workers, $CLIENTS clients, ${DURATION}s per balancer; each request on a new"
echo "connection, ${LONG_PCT}% sleep ${LONG_MS} ms, the rest ${SHORT_MS} ms; sampled every"
echo "${SAMPLE_MS} ms from the master's status endpoint. Spread = busiest worker minus idlest."
echo
printf '| %-18s | %7s | %11s | %10s | %16s | %10s |\n' balancer samples "mean spread" \
  "max spread" "in-flight/worker" dispatched
printf '|%s|%s|%s|%s|%s|%s|\n' -------------------- ---------: ------------: -----------: \
  -----------------: -----------:
for b in $BALANCERS; do
  read -r samples mean max inflight dispatched < <(run "$b")
  printf '| %-18s | %7d | %11s | %10d | %16s | %10d |\n' "$b" "$samples" "$mean" "$max" \
    "$inflight" "$dispatched"
  PORT=$((PORT + 2))
done

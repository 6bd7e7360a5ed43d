#!/usr/bin/env bash
# Rolling reloads under full load, in both pool architectures.
#
# For each mode (shared-socket, centralized): starts `tickhttp serve` on loopback, runs wrk
# against it, sends SIGHUP N times (each time waiting until every worker has been
# replaced), then SIGUSR2 M times (each time waiting until the new master is ready and the
# old one has exited), stops wrk, and counts failures from wrk's socket errors (connect,
# read, write, timeout) and non-2xx responses. Prints one line per mode and a total:
#
#   N reloads, U upgrades, R requests, F failed
#
# Usage: bench/reload.sh [RELOADS] [UPGRADES] [WORKERS] [CONNECTIONS]
#        (defaults: 10 3 2 64)
# Needs wrk; builds the release binary if needed.
set -euo pipefail

RELOADS=${1:-10}
UPGRADES=${2:-3}
WORKERS=${3:-2}
CONNS=${4:-64}
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk not found" >&2; exit 2; }
cargo build --release -q -p tickhttp-cli
BIN=${CARGO_TARGET_DIR:-target}/release/tickhttp
TMP=$(mktemp -d)
SERVER_PID=
WRK_PID=
cleanup() {
    [ -n "$WRK_PID" ] && kill "$WRK_PID" 2>/dev/null || true
    [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null || true
    sleep 0.5
    [ -n "$SERVER_PID" ] && kill -KILL "$SERVER_PID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Sum of the workers' restart counts, from the master's status JSON.
restarts() {
    curl -s --max-time 2 "http://127.0.0.1:$1/" | grep -o '"restarts":[0-9]*' |
        awk -F: '{s+=$2} END {print s+0}'
}

# Waits until process $1 has exited (it need not be a child of this shell).
wait_gone() {
    for _ in $(seq 1000); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.02
    done
    return 1
}

TOTAL_RELOADS=0
TOTAL_UPGRADES=0
TOTAL_REQUESTS=0
TOTAL_FAILED=0
for MODE in shared centralized; do
    PORT=$(free_port)
    STATUS=$(free_port)
    "$BIN" serve --mode "$MODE" --workers "$WORKERS" --listen "127.0.0.1:$PORT" \
        --status-listen "127.0.0.1:$STATUS" --log info >"$TMP/$MODE.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        curl -s --max-time 1 "http://127.0.0.1:$PORT/plaintext" >/dev/null && break
        sleep 0.05
    done
    # Long enough for every reload; stopped as soon as they are done.
    wrk -t2 -c"$CONNS" -d"$((RELOADS * 3 + UPGRADES * 5 + 5))s" "http://127.0.0.1:$PORT/plaintext" \
        >"$TMP/wrk-$MODE.txt" 2>&1 &
    WRK_PID=$!
    sleep 1
    for i in $(seq "$RELOADS"); do
        kill -HUP "$SERVER_PID"
        want=$((i * WORKERS))
        for _ in $(seq 300); do
            [ "$(restarts "$STATUS")" -ge "$want" ] && break
            sleep 0.02
        done
        got=$(restarts "$STATUS")
        [ "$got" -ge "$want" ] || { echo "$MODE: reload $i did not finish" >&2; exit 1; }
        sleep 0.3
    done
    for i in $(seq "$UPGRADES"); do
        kill -USR2 "$SERVER_PID"
        wait_gone "$SERVER_PID" || { echo "$MODE: upgrade $i: the old master did not exit" >&2; exit 1; }
        new=$(grep -a "the new master is ready" "$TMP/$MODE.log" | sed -n "${i}p" |
            grep -o 'pid=[0-9]*' | cut -d= -f2)
        [ -n "$new" ] && kill -0 "$new" || { echo "$MODE: upgrade $i failed" >&2; exit 1; }
        SERVER_PID=$new
        sleep 0.3
    done
    sleep 1
    kill -INT "$WRK_PID"   # wrk prints its summary on SIGINT
    wait "$WRK_PID" || true
    WRK_PID=
    kill -TERM "$SERVER_PID"
    wait_gone "$SERVER_PID" || true
    SERVER_PID=
    out="$TMP/wrk-$MODE.txt"
    requests=$(awk '/requests in/ {print $1}' "$out")
    socket_errors=$(awk '/Socket errors/ {
        gsub(",", ""); print $4 + $6 + $8 + $10 }' "$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$out")
    failed=$(( ${socket_errors:-0} + ${non2xx:-0} ))
    echo "$MODE: $RELOADS reloads, $UPGRADES upgrades, $requests requests, $failed failed"
    if [ "$failed" -ne 0 ]; then cat "$out" >&2; fi
    TOTAL_RELOADS=$((TOTAL_RELOADS + RELOADS))
    TOTAL_UPGRADES=$((TOTAL_UPGRADES + UPGRADES))
    TOTAL_REQUESTS=$((TOTAL_REQUESTS + requests))
    TOTAL_FAILED=$((TOTAL_FAILED + failed))
done
echo "$TOTAL_RELOADS reloads, $TOTAL_UPGRADES upgrades, $TOTAL_REQUESTS requests, $TOTAL_FAILED failed"
[ "$TOTAL_FAILED" -eq 0 ]

#!/usr/bin/env bash
# Idle WebSocket connections on one process: opens COUNT connections to the demo's /ws echo
# route of `tickhttp serve --mode single` (one event loop, one process), holds them idle,
# and reports the server's memory per connection, its CPU while idle and the time to open.
#
# Usage: bench/ws_idle.sh            (from anywhere)
#
# Environment (defaults in brackets):
#   COUNT   connections [10000]
#   HOLD    seconds the connections stay idle [40: the demo pings idle clients every 30 s,
#           so one round of 10,000 pings and pongs falls inside the window]
#   PORT    server port on 127.0.0.1 [18900]
#   BUILD   0 skips the cargo builds [1]
#
# The client is tickhttp/examples/ws_idle_client.rs (one thread, non-blocking sockets; it
# answers the pings and checks at the end that every connection still echoes). RSS is
# VmRSS from /proc: kernel socket buffers are not in it.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-10000}
HOLD=${HOLD:-40}
PORT=${PORT:-18900}
BUILD=${BUILD:-1}

if [ "$BUILD" != 0 ]; then
    cargo build --release -q -p tickhttp-cli -p tickhttp --bin tickhttp --example ws_idle_client
fi
server_bin=${CARGO_TARGET_DIR:-target}/release/tickhttp
client_bin=${CARGO_TARGET_DIR:-target}/release/examples/ws_idle_client

# Both ends need a descriptor per connection.
want=$((COUNT + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    echo "ws_idle: need $want open files, the hard limit is $(ulimit -Hn)" >&2
    exit 2
fi

work=$(mktemp -d)
server_pid=
client_pid=
cleanup() {
    [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null || true
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_per_s=$(getconf CLK_TCK)

"$server_bin" serve --mode single --listen "127.0.0.1:$PORT" --log warn \
    --max-connections $((COUNT + 100)) >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
sleep 1
rss0=$(rss_kb "$server_pid")

"$client_bin" "127.0.0.1:$PORT" /ws "$COUNT" "$HOLD" >"$work/client.out" 2>&1 &
client_pid=$!
for _ in $(seq 1200); do
    grep -q '^opened' "$work/client.out" && break
    kill -0 "$client_pid" 2>/dev/null || break
    sleep 0.1
done
if ! grep -q '^opened' "$work/client.out"; then
    echo "ws_idle: the client did not open its connections:" >&2
    cat "$work/client.out" "$work/server.log" >&2
    exit 1
fi
open_line=$(grep '^opened' "$work/client.out")

# Let the last handshakes settle, then measure over the idle window.
sleep 1
rss1=$(rss_kb "$server_pid")
window=$((HOLD - 3))
t0=$(cpu_ticks "$server_pid")
sleep "$window"
t1=$(cpu_ticks "$server_pid")
rss2=$(rss_kb "$server_pid")

client_status=0
wait "$client_pid" || client_status=$?
client_pid=
sleep 1
rss3=$(rss_kb "$server_pid")
hwm=$(hwm_kb "$server_pid")

per_conn=$(((rss2 - rss0) * 1024 / COUNT))
cpu=$(awk -v t=$((t1 - t0)) -v hz="$ticks_per_s" -v w="$window" 'BEGIN {printf "%.2f", 100 * t / hz / w}')
cpu_ms=$(awk -v t=$((t1 - t0)) -v hz="$ticks_per_s" 'BEGIN {printf "%d", 1000 * t / hz}')

echo "== $COUNT idle WebSocket connections on one process (tickhttp serve --mode single, /ws)"
echo "client: $open_line"
sed -n '2,$p' "$work/client.out" | sed 's/^/client: /'
echo "server RSS before:              $((rss0 / 1024)) MiB ($rss0 kB)"
echo "server RSS, all open:           $((rss1 / 1024)) MiB ($rss1 kB)"
echo "server RSS after the idle time: $((rss2 / 1024)) MiB ($rss2 kB), peak $((hwm / 1024)) MiB"
echo "server RSS per connection:      $per_conn bytes"
echo "server CPU while idle:          ${cpu}% of a core (${cpu_ms} ms in ${window} s)"
echo "server RSS after they closed:   $((rss3 / 1024)) MiB ($rss3 kB)"
if [ "$client_status" != 0 ]; then
    echo "ws_idle: the client reported failures (exit $client_status)" >&2
    exit 1
fi

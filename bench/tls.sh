#!/usr/bin/env bash
# HTTPS cost: keep-alive req/s over TLS against plain HTTP, and full handshakes per second
# (one request per connection), for `tickhttp serve --mode single`, alternating, ROUNDS times.
#
#   bench/tls.sh                      # DURATION=5 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
PORT_PLAIN=${PORT_PLAIN:-18401}
PORT_TLS=${PORT_TLS:-18402}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
[ "${BUILD:-1}" = 1 ] && cargo build --release -q -p tickhttp-cli
BIN=${CARGO_TARGET_DIR:-target}/release/tickhttp
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
pin() { if [ "$(nproc)" -ge 2 ]; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }
# The servers start as simple commands (taskset execs the server), so that $! is the
# server's own pid: its CPU time is read from /proc/$!/stat and cleanup kills it.
server_pin=()
if [ "$(nproc)" -ge 2 ]; then server_pin=(taskset -c 0); fi
"${server_pin[@]}" "$BIN" serve --mode single --log warn --listen "127.0.0.1:$PORT_PLAIN" &
pids+=($!)
"${server_pin[@]}" "$BIN" serve --mode single --log warn --listen "127.0.0.1:$PORT_TLS" \
    --tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem" &
pids+=($!)
sleep 1
rate() { pin 1 wrk -t1 -c"$2" -d"${DURATION}s" "${@:3}" "$1" 2>/dev/null | awk '/requests in/ {print $1}'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
declare -A sum cpu
for r in $(seq 1 "$ROUNDS"); do
    for case in plain tls plain_close tls_close; do
        case $case in plain*) spid=${pids[0]} ;; *) spid=${pids[1]} ;; esac
        t0=$(ticks "$spid")
        case $case in
            plain) n=$(rate "http://127.0.0.1:$PORT_PLAIN/plaintext" 64) ;;
            tls) n=$(rate "https://127.0.0.1:$PORT_TLS/plaintext" 64) ;;
            plain_close) n=$(rate "http://127.0.0.1:$PORT_PLAIN/plaintext" 16 -H "Connection: close") ;;
            tls_close) n=$(rate "https://127.0.0.1:$PORT_TLS/plaintext" 16 -H "Connection: close") ;;
        esac
        t1=$(ticks "$spid")
        v=$(( n / DURATION ))
        us=$(awk -v t=$((t1 - t0)) -v n="$n" -v hz="$hz" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
        echo "round $r $case $v req/s, server CPU $us us/req"
        sum[$case]=$(( ${sum[$case]:-0} + v ))
        cpu[$case]=$(awk -v a="${cpu[$case]:-0}" -v b="$us" 'BEGIN { print a + b }')
    done
done
echo
echo "| scenario | req/s (mean of $ROUNDS) | server CPU us/req |"
echo "|---|--:|--:|"
for case in plain tls plain_close tls_close; do
    echo "| $case | $(( ${sum[$case]} / ROUNDS )) | $(awk -v c="${cpu[$case]}" -v r="$ROUNDS" 'BEGIN { printf "%.1f", c / r }') |"
done
awk -v a="${sum[tls]}" -v b="${sum[plain]}" 'BEGIN { printf "\nTLS keep-alive / plain keep-alive = %.2f\n", a / b }'
echo "tls_close is full TLS handshakes (ECDSA P-256, TLS 1.3), one request each; wrk (one"
echo "thread doing its own handshakes) is the limit there, the server CPU per handshake is the figure."

#!/usr/bin/env bash
# Static files and uploads: tickhttp's examples/static_site against nginx on the same files,
# then the memory cost of a 1 GiB multipart upload.
#
# 1. A temp dir holds 1k.bin (1 KiB) and 1m.bin (1 MiB) of random bytes.
# 2. static_site (one process, one thread) and nginx (1 worker, access_log off, sendfile on,
#    open_file_cache) serve it. With PIN, both servers run on core 0 and wrk on core 1.
# 3. wrk -t1 -cCONNECTIONS -dDURATION loads each file on each server, alternating the order
#    each round. Printed: the median req/s over ROUNDS, and the median of the per-round
#    ratios tickhttp/nginx (each round's pair ran back to back, so a burst of load from
#    other processes hits both sides of a ratio alike).
#    Goals: >= 1.0x nginx for 1 KiB (served from tickhttp's cache), >= 0.9x for 1 MiB
#    (sendfile).
# 4. A fresh static_site receives a 1 GiB file (sparse, made with truncate) by curl -F;
#    its peak RSS (VmHWM) before and after is printed. Goal: < 32 MiB growth.
#
# Usage: bench/static.sh
#
# Environment (defaults in brackets):
#   DURATION     seconds of load per run [5]
#   ROUNDS       rounds [5]
#   CONNECTIONS  wrk connections [64]
#   UPLOAD_MIB   upload size in MiB, 0 skips the upload check [1024]
#   PIN          auto | 0 | 1: servers on core 0, wrk on core 1 [auto: when >= 2 cores]
#   BUILD        0 skips cargo build [1]
#   BASE_PORT    first port [18280]
#   NGINX        nginx binary [/usr/sbin/nginx, else nginx on PATH]
#   EXAMPLE      the static_site binary [target/release/examples/static_site]
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-5}
CONNECTIONS=${CONNECTIONS:-64}
UPLOAD_MIB=${UPLOAD_MIB:-1024}
PIN=${PIN:-auto}
BUILD=${BUILD:-1}
BASE_PORT=${BASE_PORT:-18280}
NGINX=${NGINX:-$(command -v /usr/sbin/nginx || command -v nginx || true)}
EXAMPLE=${EXAMPLE:-${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/static_site}

die() { echo "static.sh: $*" >&2; exit 1; }
log() { echo "$*" >&2; }

for v in DURATION ROUNDS CONNECTIONS UPLOAD_MIB BASE_PORT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
command -v wrk >/dev/null || die "wrk is not installed"
command -v curl >/dev/null || die "curl is not installed"
[[ -x $NGINX ]] || die "nginx is not installed (set NGINX)"

if [[ $PIN == auto ]]; then
  if (($(nproc) >= 2)) && command -v taskset >/dev/null; then PIN=1; else PIN=0; fi
fi
SERVER_CPU=()
CLIENT_CPU=()
if [[ $PIN == 1 ]]; then
  SERVER_CPU=(taskset -c 0)
  CLIENT_CPU=(taskset -c 1)
fi

if [[ $BUILD == 1 ]]; then
  log "building examples/static_site (release)"
  (cd "$ROOT" && cargo build --release --quiet -p tickhttp --example static_site)
fi
[[ -x $EXAMPLE ]] || die "$EXAMPLE not found (build it or set CARGO_TARGET_DIR)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tickhttp-static-bench.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

SITE=$WORK/site
mkdir -p "$SITE" "$WORK/nginx/tmp"
head -c 1024 /dev/urandom >"$SITE/1k.bin"
head -c $((1024 * 1024)) /dev/urandom >"$SITE/1m.bin"
# nginx started as root serves as nobody: the files must be world-readable.
chmod 755 "$WORK" "$SITE"
chmod 644 "$SITE"/*.bin

TICK_PORT=$BASE_PORT
NGINX_PORT=$((BASE_PORT + 1))
UPLOAD_PORT=$((BASE_PORT + 2))

cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid nginx.pid;
error_log error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    keepalive_requests 1000000;
    keepalive_timeout 65s;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    types { application/octet-stream bin; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $SITE;
    }
}
EOF

wait_ready() { # URL
  for _ in $(seq 100); do
    curl -s -o /dev/null -f "$1" && return 0
    sleep 0.1
  done
  die "no answer from $1"
}

"${SERVER_CPU[@]}" "$EXAMPLE" "127.0.0.1:$TICK_PORT" "$SITE" 2>"$WORK/tickhttp.log" &
PIDS+=($!)
"${SERVER_CPU[@]}" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
wait_ready "http://127.0.0.1:$TICK_PORT/1k.bin"
wait_ready "http://127.0.0.1:$NGINX_PORT/1k.bin"

# The servers answer identically (bytes and length).
for f in 1k.bin 1m.bin; do
  for port in $TICK_PORT $NGINX_PORT; do
    curl -s "http://127.0.0.1:$port/$f" | cmp -s - "$SITE/$f" || die "port $port serves $f wrongly"
  done
done

rps() { # PORT FILE -> requests/s
  "${CLIENT_CPU[@]}" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$1/$2" |
    awk '/^Requests\/sec:/ { print $2 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A RESULTS
log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
log "warming up"
for f in 1k.bin 1m.bin; do
  for port in $TICK_PORT $NGINX_PORT; do
    "${CLIENT_CPU[@]}" wrk -t1 -c"$CONNECTIONS" -d1s "http://127.0.0.1:$port/$f" >/dev/null
  done
done
for round in $(seq "$ROUNDS"); do
  for f in 1k.bin 1m.bin; do
    if ((round % 2)); then order="tickhttp nginx"; else order="nginx tickhttp"; fi
    declare -A pair=()
    for server in $order; do
      port=$TICK_PORT
      [[ $server == nginx ]] && port=$NGINX_PORT
      r=$(rps "$port" "$f")
      log "round $round  $f  $server  $r req/s"
      RESULTS[$server.$f]+="$r "
      pair[$server]=$r
    done
    RESULTS[ratio.$f]+="$(awk -v t="${pair[tickhttp]}" -v n="${pair[nginx]}" 'BEGIN { printf "%.3f", t / n }') "
  done
done
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "| file | tickhttp req/s (median) | nginx req/s (median) | tickhttp / nginx (median of rounds) | goal |"
echo "|---|---:|---:|---:|---|"
for f in 1k.bin 1m.bin; do
  t=$(tr ' ' '\n' <<<"${RESULTS[tickhttp.$f]}" | grep . | median)
  n=$(tr ' ' '\n' <<<"${RESULTS[nginx.$f]}" | grep . | median)
  ratio=$(tr ' ' '\n' <<<"${RESULTS[ratio.$f]}" | grep . | median | awk '{ printf "%.2f", $1 }')
  goal=1.0
  [[ $f == 1m.bin ]] && goal=0.9
  verdict=$(awk -v r="$ratio" -v g="$goal" 'BEGIN { print (r >= g) ? "met" : "missed" }')
  printf '| %s | %.0f | %.0f | %sx | >= %sx %s |\n' "$f" "$t" "$n" "$ratio" "$goal" "$verdict"
done

if ((UPLOAD_MIB > 0)); then
  log "upload: ${UPLOAD_MIB} MiB through multipart/form-data"
  BIG=$WORK/upload.bin
  truncate -s "${UPLOAD_MIB}M" "$BIG"
  "$EXAMPLE" "127.0.0.1:$UPLOAD_PORT" "$SITE" $(((UPLOAD_MIB + 64) * 1024 * 1024)) 2>"$WORK/upload.log" &
  UPID=$!
  PIDS+=($UPID)
  wait_ready "http://127.0.0.1:$UPLOAD_PORT/1k.bin"
  curl -s -o /dev/null -F "small=@$SITE/1m.bin" "http://127.0.0.1:$UPLOAD_PORT/upload"
  hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$UPID/status"; }
  before=$(hwm)
  start=$(date +%s.%N)
  answer=$(curl -s --max-time 600 -F "file=@$BIG" "http://127.0.0.1:$UPLOAD_PORT/upload")
  secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
  after=$(hwm)
  expected="file file (upload.bin): $((UPLOAD_MIB * 1024 * 1024)) bytes"
  [[ $answer == *"$expected"* ]] || die "upload answer was: $answer"
  growth=$(((after - before) / 1024))
  verdict=$( ((after - before < 32 * 1024)) && echo met || echo missed)
  echo
  echo "| upload | time | peak RSS before | peak RSS after | growth | goal |"
  echo "|---|---:|---:|---:|---:|---|"
  printf '| %s MiB multipart | %s s | %d KiB | %d KiB | %d MiB | < 32 MiB %s |\n' \
    "$UPLOAD_MIB" "$secs" "$before" "$after" "$growth" "$verdict"
fi

#!/usr/bin/env bash
# Side-by-side comparison of tickhttp with hyper, actix-web and nginx.
#
# Every server runs on its own 127.0.0.1 port; wrk loads it for a bounded
# time; the script reports the median over ROUNDS of req/s, p99 latency and
# server CPU time per request, and each server's req/s relative to hyper.
#
# Usage: bench/compare.sh            (from anywhere)
#
# Environment (defaults in brackets):
#   SUITE        single | pool | all [single]
#                  single: tickhttp --mode single vs hyper --threads 1,
#                          server pinned to core 0 and wrk to core 1
#                  pool:   tickhttp --mode shared / centralized, hyper, actix
#                          and nginx with WORKERS workers each, nothing pinned
#   SERVERS      only these servers, by kind (tickhttp hyper actix nginx) or by
#                full name (e.g. tickhttp-shared-2) [all of the suite]
#   SCENARIOS    any of: plaintext pipeline json close [all four]
#   DURATION     seconds of measured load per run [5]
#   WARMUP       seconds of unmeasured load before each run, 0 for none [1]
#   ROUNDS       rounds; server order rotates each round [3]
#   CONNECTIONS  wrk connections [64]
#   WRK_THREADS  wrk threads [1]
#   DEPTH        pipeline depth of the pipeline scenario [16]
#   WORKERS      workers/threads of every server in the pool suite [2]
#   PIN          auto | 0 | 1: pin server and wrk to separate cores
#                [auto: in the single suite when there are >= 2 cores]
#   BUILD        0 skips the cargo builds [1]
#   BASE_PORT    first port; each server gets its own [18080]
#   RESULTS_DIR  raw results, logs and report.md [bench/results/DATE-TIME]
#   NGINX        nginx binary [/usr/sbin/nginx, else nginx on PATH]
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")

SUITE=${SUITE:-single}
SERVERS=${SERVERS:-}
SCENARIOS=${SCENARIOS:-plaintext pipeline json close}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-1}
DEPTH=${DEPTH:-16}
WORKERS=${WORKERS:-2}
PIN=${PIN:-auto}
BUILD=${BUILD:-1}
BASE_PORT=${BASE_PORT:-18080}
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results/$(date +%Y%m%d-%H%M%S)}
READY_TIMEOUT=${READY_TIMEOUT:-10}

TICKHTTP=${CARGO_TARGET_DIR:-$ROOT/target}/release/tickhttp
PEERS_BIN=${CARGO_TARGET_DIR:-$BENCH_DIR/peers/target}/release

die() { echo "compare.sh: $*" >&2; exit 1; }
log() { echo "$*" >&2; }

# ---------------------------------------------------------------- settings

case $SUITE in
  single) SUITES=(single) ;;
  pool) SUITES=(pool) ;;
  all) SUITES=(single pool) ;;
  *) die "SUITE must be single, pool or all (got '$SUITE')" ;;
esac
for s in $SCENARIOS; do
  case $s in plaintext | pipeline | json | close) ;; *) die "unknown scenario '$s'" ;; esac
done
for v in DURATION WARMUP ROUNDS CONNECTIONS WRK_THREADS DEPTH WORKERS BASE_PORT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
((DURATION > 0 && ROUNDS > 0)) || die "DURATION and ROUNDS must be > 0"

suite_servers() {
  case $1 in
    single) echo "tickhttp-single hyper-1" ;;
    pool) echo "tickhttp-shared-$WORKERS tickhttp-centralized-$WORKERS hyper-$WORKERS" \
      "actix-$WORKERS nginx-$WORKERS" ;;
  esac
}

# SERVERS filters by kind (text before the first '-') or by full name.
selected() {
  [[ -z $SERVERS ]] && return 0
  local w
  for w in $SERVERS; do
    [[ $w == "$1" || $w == "${1%%-*}" ]] && return 0
  done
  return 1
}

declare -A SUITE_LIST=()
ALL_SELECTED=""
for suite in "${SUITES[@]}"; do
  list=""
  for name in $(suite_servers "$suite"); do
    if selected "$name"; then list+="$name "; fi
  done
  [[ -n $list ]] || die "SERVERS='$SERVERS' selects nothing in the $suite suite"
  SUITE_LIST[$suite]=$list
  ALL_SELECTED+="$list"
done
uses() { [[ " $ALL_SELECTED" == *" $1-"* ]]; }

# ------------------------------------------------------------ requirements

# Missing tools are reported together, with the command that installs them.
missing=()
command -v wrk >/dev/null || missing+=("wrk: apt-get install -y wrk")
command -v curl >/dev/null || missing+=("curl: apt-get install -y curl")
command -v taskset >/dev/null || missing+=("taskset: apt-get install -y util-linux")
if uses nginx; then
  NGINX=${NGINX:-$(command -v /usr/sbin/nginx nginx | head -n1 || true)}
  [[ -n $NGINX && -x $NGINX ]] || missing+=("nginx: apt-get install -y nginx-light")
fi
if ((BUILD)); then
  command -v cargo >/dev/null || missing+=("cargo: https://rustup.rs, or BUILD=0 with prebuilt binaries")
fi
if ((${#missing[@]})); then
  printf 'compare.sh: missing %s\n' "${missing[@]}" >&2
  exit 1
fi

CORES=$(nproc)
CLK_TCK=$(getconf CLK_TCK)

# ------------------------------------------------------------------ builds

if ((BUILD)); then
  if uses tickhttp; then
    log "==> cargo build --release -p tickhttp-cli"
    (cd "$ROOT" && cargo build --release -p tickhttp-cli)
  fi
  if uses hyper || uses actix; then
    log "==> cargo build --release (bench/peers)"
    (cd "$BENCH_DIR/peers" && cargo build --release)
  fi
fi
if uses tickhttp; then [[ -x $TICKHTTP ]] || die "no $TICKHTTP: build it or drop BUILD=0"; fi
if uses hyper; then [[ -x $PEERS_BIN/hyper-hello ]] || die "no $PEERS_BIN/hyper-hello"; fi
if uses actix; then [[ -x $PEERS_BIN/actix-hello ]] || die "no $PEERS_BIN/actix-hello"; fi

mkdir -p "$RESULTS_DIR/logs"
RAW=$RESULTS_DIR/raw.tsv
printf 'suite\tserver\tscenario\tround\tstatus\trps\tp99_us\tcpu_us_per_req\terrors\n' >"$RAW"

# --------------------------------------------------------- process helpers

# "pid ppid ticks" for every process; ticks = utime+stime+cutime+cstime, so
# reaped children still count. comm may hold spaces: fields are read after
# the last ") ".
proc_table() {
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{
    pid = $1; line = $0; sub(/^.*\) /, "", line); split(line, f, " ")
    print pid, f[2], f[12] + f[13] + f[14] + f[15] }'
}

# Pids of ROOT and of all its descendants (worker processes of a pool).
tree_pids() {
  proc_table | awk -v root="$1" '
    { ppid[$1] = $2 }
    END { for (p in ppid) { q = p; while (q + 0 > 0 && q != root) q = ppid[q]; if (q == root) print p } }'
}

# CPU clock ticks used so far by ROOT and all its descendants.
tree_ticks() {
  proc_table | awk -v root="$1" '
    { ppid[$1] = $2; t[$1] = $3 }
    END { s = 0; for (p in t) { q = p; while (q + 0 > 0 && q != root) q = ppid[q]; if (q == root) s += t[p] }
          print s }'
}

# True while PID exists and is not a zombie.
alive() {
  local st
  st=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z ]]
}

SERVER_PID=""

# Stops a server and every process under it: TERM, then KILL after 5 s.
# The tree is listed first so that workers orphaned by the root still go.
stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  local pid=$SERVER_PID pids i
  SERVER_PID=""
  pids=$(tree_pids "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  # shellcheck disable=SC2086 # word splitting of the pid list is intended
  kill -KILL $pids 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  stop_server
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The command line of server NAME on PORT, in the array CMD.
server_cmd() {
  local name=$1 port=$2 addr=127.0.0.1:$2 n=${1##*-}
  case $name in
    tickhttp-single) CMD=("$TICKHTTP" serve --listen "$addr" --mode single) ;;
    tickhttp-shared-*) CMD=("$TICKHTTP" serve --listen "$addr" --mode shared --workers "$n") ;;
    tickhttp-centralized-*) CMD=("$TICKHTTP" serve --listen "$addr" --mode centralized --workers "$n") ;;
    hyper-*) CMD=("$PEERS_BIN/hyper-hello" "$addr" --threads "$n") ;;
    actix-*) CMD=("$PEERS_BIN/actix-hello" "$addr" --workers "$n") ;;
    nginx-*)
      # A private prefix: config, pid, logs and temp dirs, none under /var.
      local dir=$RESULTS_DIR/$name
      mkdir -p "$dir/tmp"
      sed -e "s/@WORKERS@/$n/" -e "s/@PORT@/$port/" "$BENCH_DIR/nginx.conf.template" >"$dir/nginx.conf"
      CMD=("$NGINX" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;')
      ;;
    *) die "unknown server $name" ;;
  esac
}

# Starts NAME on PORT and waits until it answers. Returns 1 if it does not.
start_server() {
  local name=$1 port=$2 logf=$RESULTS_DIR/logs/$1.log i
  # A leftover listener would answer the readiness check in our place.
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    log "   port $port is already in use; set BASE_PORT to move every server"
    return 1
  fi
  server_cmd "$name" "$port"
  if ((PIN_ON)); then CMD=(taskset -c 0 "${CMD[@]}"); fi
  echo "== $(date +%T) ${CMD[*]}" >>"$logf"
  "${CMD[@]}" >>"$logf" 2>&1 </dev/null &
  SERVER_PID=$!
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/plaintext" 2>/dev/null; then
      return 0
    fi
    alive "$SERVER_PID" || break
    sleep 0.1
  done
  log "   $name did not answer on 127.0.0.1:$port; last lines of $logf:"
  tail -n 5 "$logf" | sed 's/^/   | /' >&2
  stop_server
  return 1
}

# Runs wrk for SECONDS against PORT with SCENARIO; prints its output.
# `timeout` bounds the run even if wrk itself hangs.
run_wrk() {
  local secs=$1 port=$2 scenario=$3 url=http://127.0.0.1:$2
  local args=(-t"$WRK_THREADS" -c"$CONNECTIONS" -d"${secs}s" --timeout 2s)
  case $scenario in
    plaintext) args+=(-s "$BENCH_DIR/report.lua" "$url/plaintext") ;;
    pipeline) args+=(-s "$BENCH_DIR/pipeline.lua" "$url/plaintext" -- "$DEPTH") ;;
    json) args+=(-s "$BENCH_DIR/report.lua" "$url/json") ;;
    close) args+=(-H "Connection: close" -s "$BENCH_DIR/report.lua" "$url/plaintext") ;;
  esac
  local pin=()
  if ((PIN_ON)); then pin=(taskset -c 1); fi
  timeout --kill-after=5 $((secs + 15)) "${pin[@]}" wrk "${args[@]}"
}

# Value of KEY in a "RESULT k=v k=v" line.
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }

# One measurement: fresh server, warm-up, measured wrk run, CPU accounting.
measure() {
  local suite=$1 name=$2 port=$3 scenario=$4 round=$5
  local wlog=$RESULTS_DIR/logs/$suite-$name-$scenario-r$round.wrk
  local tag
  tag=$(printf '[%s %d/%d] %-9s %-24s' "$suite" "$round" "$ROUNDS" "$scenario" "$name")
  if ! start_server "$name" "$port"; then
    printf '%s\t%s\t%s\t%s\tfailed\t\t\t\t\n' "$suite" "$name" "$scenario" "$round" >>"$RAW"
    log "$tag FAILED to start"
    FAILURES=$((FAILURES + 1))
    return 0
  fi
  if ((WARMUP > 0)); then run_wrk "$WARMUP" "$port" "$scenario" >/dev/null 2>&1 || true; fi

  local t0 t1 out res
  t0=$(tree_ticks "$SERVER_PID")
  out=$(run_wrk "$DURATION" "$port" "$scenario" 2>&1) || true
  t1=$(tree_ticks "$SERVER_PID")
  printf '%s\n' "$out" >"$wlog"
  res=$(grep -m1 '^RESULT ' <<<"$out" || true)

  local ok=1
  alive "$SERVER_PID" || ok=0
  stop_server
  local requests=0
  [[ -n $res ]] && requests=$(field "$res" requests)
  if ((!ok || requests == 0)); then
    printf '%s\t%s\t%s\t%s\tfailed\t\t\t\t\n' "$suite" "$name" "$scenario" "$round" >>"$RAW"
    log "$tag FAILED ($( ((ok)) && echo "no requests completed" || echo "server died"); see $wlog)"
    FAILURES=$((FAILURES + 1))
    return 0
  fi

  local dur p99 errors rps cpu
  dur=$(field "$res" duration_us)
  p99=$(field "$res" p99_us)
  errors=$(($(field "$res" err_connect) + $(field "$res" err_read) + $(field "$res" err_write) \
    + $(field "$res" err_status) + $(field "$res" err_timeout)))
  rps=$(awk -v n="$requests" -v d="$dur" 'BEGIN { printf "%.0f", n * 1e6 / d }')
  cpu=$(awk -v t="$((t1 - t0))" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.3f", t * 1e6 / hz / n }')
  printf '%s\t%s\t%s\t%s\tok\t%s\t%s\t%s\t%s\n' "$suite" "$name" "$scenario" "$round" \
    "$rps" "$p99" "$cpu" "$errors" >>"$RAW"
  log "$(printf '%s %10s req/s  p99 %8.2f ms  cpu %7.2f us/req  errors %s' \
    "$tag" "$rps" "$(awk -v u="$p99" 'BEGIN { print u / 1000 }')" "$cpu" "$errors")"
}

# ------------------------------------------------------------------ rounds

FAILURES=0
log "==> $CORES cores; DURATION=${DURATION}s WARMUP=${WARMUP}s ROUNDS=$ROUNDS" \
  "wrk -t$WRK_THREADS -c$CONNECTIONS; results in $RESULTS_DIR"
for suite in "${SUITES[@]}"; do
  # Pinning keeps wrk off the server's core; a pool needs both cores.
  case $PIN in
    auto) PIN_ON=$([[ $suite == single ]] && ((CORES >= 2)) && echo 1 || echo 0) ;;
    0 | 1) PIN_ON=$PIN ;;
    *) die "PIN must be auto, 0 or 1" ;;
  esac
  read -r -a names <<<"${SUITE_LIST[$suite]}"
  log "==> suite $suite: ${names[*]} (pinned: $( ((PIN_ON)) && echo "server core 0, wrk core 1" || echo no))"
  for ((round = 1; round <= ROUNDS; round++)); do
    for scenario in $SCENARIOS; do
      # Rotate the server order every round so that slow drifts of the
      # machine (heat, background work) hit every server alike.
      for ((k = 0; k < ${#names[@]}; k++)); do
        i=$(((k + round - 1) % ${#names[@]}))
        measure "$suite" "${names[$i]}" $((BASE_PORT + i)) "$scenario" "$round"
      done
    done
  done
done

# ------------------------------------------------------------------ report

# Medians per suite/server/scenario from raw.tsv, then one Markdown table per
# suite and a matrix of req/s relative to hyper.
report() {
  local suite
  echo "# tickhttp comparison"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $CORES cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true))."
  echo "wrk -t$WRK_THREADS -c$CONNECTIONS, ${DURATION}s per run after ${WARMUP}s warm-up," \
    "median of $ROUNDS round(s); pipeline depth $DEPTH."
  echo "CPU is server user+system time (all processes of the server) per request."
  for suite in "${SUITES[@]}"; do
    echo
    echo "## Suite: $suite"
    echo
    awk -F'\t' -v suite="$suite" -v order="${SUITE_LIST[$suite]}" -v scen="$SCENARIOS" '
      function median(key, col,   n, i, j, v, tmp) {
        n = cnt[key]; if (n == 0) return ""
        for (i = 1; i <= n; i++) v[i] = val[key, i, col]
        for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { tmp = v[j]; v[j] = v[j - 1]; v[j - 1] = tmp }
        return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      }
      NR > 1 && $1 == suite {
        key = $2 SUBSEP $3
        if ($5 == "ok") { c = ++cnt[key]; val[key, c, 1] = $6; val[key, c, 2] = $7; val[key, c, 3] = $8; err[key] += $9 }
        else fail[key]++
      }
      END {
        ns = split(order, srv, " "); nc = split(scen, sc, " ")
        base = ""; for (i = 1; i <= ns; i++) if (srv[i] ~ /^hyper-/) base = srv[i]
        print "| scenario | server | req/s | p99 ms | CPU us/req | vs hyper | errors | failed runs |"
        print "|---|---|--:|--:|--:|--:|--:|--:|"
        for (c = 1; c <= nc; c++) {
          b = (base != "") ? median(base SUBSEP sc[c], 1) : ""
          for (i = 1; i <= ns; i++) {
            key = srv[i] SUBSEP sc[c]; r = median(key, 1)
            if (r == "") { printf "| %s | %s | failed | | | | | %d |\n", sc[c], srv[i], fail[key]; continue }
            ratio[key] = (b != "" && b > 0) ? sprintf("%.2f", r / b) : "-"
            printf "| %s | %s | %.0f | %.2f | %.2f | %s | %d | %d |\n", sc[c], srv[i], r,
              median(key, 2) / 1000, median(key, 3), ratio[key], err[key], fail[key]
          }
        }
        print ""
        print "req/s relative to " (base != "" ? base : "hyper (not run)") ":"
        print ""
        line = "| scenario |"; sep = "|---|"
        for (i = 1; i <= ns; i++) { line = line " " srv[i] " |"; sep = sep "--:|" }
        print line; print sep
        for (c = 1; c <= nc; c++) {
          line = "| " sc[c] " |"
          for (i = 1; i <= ns; i++) {
            key = srv[i] SUBSEP sc[c]
            line = line " " ((key in ratio) ? ratio[key] : "failed") " |"
          }
          print line
        }
      }' "$RAW"
  done
}

report | tee "$RESULTS_DIR/report.md"
log
log "raw results: $RAW; report: $RESULTS_DIR/report.md; wrk and server logs: $RESULTS_DIR/logs"
if ((FAILURES)); then
  die "$FAILURES run(s) failed; see the logs above"
fi

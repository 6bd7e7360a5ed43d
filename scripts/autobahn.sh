#!/usr/bin/env bash
# RFC 6455 conformance: runs Autobahn|Testsuite's fuzzingclient against the demo's /ws echo
# route and summarises its report. Exits nonzero if any case outside 12.* and 13.*
# (permessage-deflate, which tickhttp does not offer) failed.
#
#   scripts/autobahn.sh              # every case
#   scripts/autobahn.sh '1.*' '5.*'  # some cases only
#
# wstest needs Python 2.7. The script looks for it in $AUTOBAHN_PYTHON2, then pyenv's 2.7
# builds, then `python2.7` on PATH (`pyenv install 2.7.18` provides one, given the build
# dependencies libssl-dev zlib1g-dev libbz2-dev libreadline-dev libsqlite3-dev libffi-dev).
# It installs autobahntestsuite into a virtualenv (made with virtualenv<20.22, the last line
# that still creates Python 2 environments) at target/autobahn-venv, once.
#
# Environment: AUTOBAHN_PORT (default 9001), AUTOBAHN_VENV, AUTOBAHN_PYTHON2, TICKHTTP_BIN
# (default: target/release/tickhttp, built if missing or stale), AUTOBAHN_TIMEOUT (seconds
# for the whole run, default 1800). The report is in target/autobahn/reports/index.html.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

port=${AUTOBAHN_PORT:-9001}
venv=${AUTOBAHN_VENV:-$root/target/autobahn-venv}
work=$root/target/autobahn
timeout_s=${AUTOBAHN_TIMEOUT:-1800}

find_python2() {
    if [ -n "${AUTOBAHN_PYTHON2:-}" ]; then
        echo "$AUTOBAHN_PYTHON2"
        return
    fi
    local pyenv_root
    pyenv_root=$( (command -v pyenv >/dev/null && pyenv root) || echo "$HOME/.pyenv")
    local candidate
    for candidate in "$pyenv_root"/versions/2.7*/bin/python2.7; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return
        fi
    done
    command -v python2.7 || true
}

if [ ! -x "$venv/bin/wstest" ]; then
    python2=$(find_python2)
    if [ -z "$python2" ]; then
        echo "autobahn: no Python 2.7 found; install one (e.g. pyenv install 2.7.18) or set AUTOBAHN_PYTHON2" >&2
        exit 2
    fi
    echo "== installing autobahntestsuite with $python2 into $venv"
    "$python2" -m pip --version >/dev/null 2>&1 || "$python2" -m ensurepip >/dev/null
    "$python2" -m pip install -q --disable-pip-version-check "virtualenv<20.22"
    "$python2" -m virtualenv -q "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check autobahntestsuite
fi

bin=${TICKHTTP_BIN:-}
if [ -z "$bin" ]; then
    echo "== building tickhttp (release)"
    cargo build --release -q -p tickhttp-cli
    bin=$root/target/release/tickhttp
fi

rm -rf "$work"
mkdir -p "$work/reports"

server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

"$bin" serve --mode single --listen "127.0.0.1:$port" --log warn >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "autobahn: the server did not start:" >&2
        cat "$work/server.log" >&2
        exit 2
    fi
    sleep 0.1
done

# The case selection: the arguments, or every case.
cases='["*"]'
if [ $# -gt 0 ]; then
    cases=$(printf '"%s",' "$@")
    cases="[${cases%,}]"
fi
sed -e "s|@OUTDIR@|$work/reports|" -e "s|@PORT@|$port|" -e "s|\"cases\": \[\"\*\"\]|\"cases\": $cases|" \
    scripts/autobahn/fuzzingclient.json.in >"$work/fuzzingclient.json"

echo "== wstest fuzzingclient against ws://127.0.0.1:$port/ws (log: $work/wstest.log)"
started=$(date +%s)
set +e
(cd "$work" && timeout "$timeout_s" "$venv/bin/wstest" -m fuzzingclient -s fuzzingclient.json) \
    >"$work/wstest.log" 2>&1
status=$?
set -e
echo "   took $(($(date +%s) - started)) s"
if [ $status -ne 0 ]; then
    echo "autobahn: wstest exited with $status" >&2
    tail -n 30 "$work/wstest.log" >&2
    exit 2
fi
if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "autobahn: the server died during the run:" >&2
    tail -n 30 "$work/server.log" >&2
    exit 1
fi

python3 scripts/autobahn/summary.py "$work/reports/index.json"

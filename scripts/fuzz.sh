#!/usr/bin/env bash
# Runs each cargo-fuzz target under fuzz/ for SECONDS (default 30) on the stable toolchain.
#
#   scripts/fuzz.sh [SECONDS]
#
# Each target reads the committed seeds in fuzz/corpus/TARGET/ plus a scratch corpus in
# fuzz/scratch/TARGET/ (git-ignored; new inputs are written there, so the committed corpus
# stays as it is). Exits 1 if any target crashed (the input is saved under
# fuzz/artifacts/TARGET/), 2 on a usage or build error, 0 otherwise.
#
# Environment:
#   FUZZ_TARGETS     space-separated targets to run (default: every target `cargo fuzz list` shows)
#   FUZZ_SANITIZER   none (default; works on stable) or address (needs RUSTC_BOOTSTRAP=1, which
#                    this script then sets; builds into fuzz/target-asan, about 4x slower)
#   FUZZ_ARGS        extra libFuzzer flags for every target, e.g. "-jobs=2 -workers=2"
set -euo pipefail

secs="${1:-30}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
    echo "usage: $0 [SECONDS]   (a positive whole number of seconds per target)" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz="$root/fuzz"
cd "$fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

sanitizer="${FUZZ_SANITIZER:-none}"
build_args=(--sanitizer "$sanitizer")
case "$sanitizer" in
    none) ;;
    address)
        # -Zsanitizer=address is a nightly flag; the stable compiler accepts it with this set.
        export RUSTC_BOOTSTRAP=1
        build_args+=(--target-dir "$fuzz/target-asan")
        ;;
    *)
        echo "FUZZ_SANITIZER must be none or address, got '$sanitizer'" >&2
        exit 2
        ;;
esac

if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <(cargo fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "no fuzz targets found" >&2
    exit 2
fi

echo "==> building ${targets[*]} (sanitizer: $sanitizer)"
if ! cargo fuzz build "${build_args[@]}"; then
    echo "build failed" >&2
    exit 2
fi

# Per-target libFuzzer flags.
target_args() {
    case "$1" in
        # Long enough to reach the default 16 KiB head limit.
        request_head) echo "-max_len=20480" ;;
        chunked) echo "-max_len=8192" ;;
    esac
}

read -r -a extra <<<"${FUZZ_ARGS:-}"
logs="$fuzz/scratch/logs"
mkdir -p "$logs"
failed=()
summary=()
for t in "${targets[@]}"; do
    scratch="$fuzz/scratch/$t"
    seeds="$fuzz/corpus/$t"
    mkdir -p "$scratch" "$seeds"
    log="$logs/$t.log"
    args=(-max_total_time="$secs" -timeout=10 -print_final_stats=1)
    read -r -a more <<<"$(target_args "$t")"
    args+=("${more[@]}")
    if [ -f "$fuzz/dict/$t.dict" ]; then
        args+=(-dict="$fuzz/dict/$t.dict")
    fi
    args+=("${extra[@]}")

    echo "==> $t for ${secs}s (log: ${log#"$root"/})"
    set +e
    cargo fuzz run "${build_args[@]}" "$t" "$scratch" "$seeds" -- "${args[@]}" >"$log" 2>&1
    rc=$?
    set -e

    # Final stats are missing when the run crashed; none of these may stop the script.
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1 || true)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1 || true)"
    cov="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 | sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\).*/cov \1, features \2, corpus \3/p' || true)"
    if [ "$rc" -eq 0 ]; then
        summary+=("$t: ok, ${runs:-?} runs, ${rate:-?} exec/s${cov:+, $cov}")
    else
        failed+=("$t")
        summary+=("$t: FAILED (exit $rc) after ${runs:-?} runs, ${rate:-?} exec/s")
        echo "---- $t failed; end of its log:" >&2
        tail -n 40 "$log" >&2
        crash="$(ls -t "$fuzz/artifacts/$t"/ 2>/dev/null | head -n 1 || true)"
        if [ -n "$crash" ]; then
            echo "---- input saved as fuzz/artifacts/$t/$crash; reproduce with:" >&2
            echo "     cd fuzz && cargo fuzz run ${build_args[*]} $t artifacts/$t/$crash" >&2
        fi
    fi
done

echo "==> summary"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "crashed: ${failed[*]}" >&2
    exit 1
fi

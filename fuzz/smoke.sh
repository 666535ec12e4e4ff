#!/usr/bin/env bash
# Runs every fuzz target for a bounded time from its seed corpus
# (fuzz/corpus/<target>/, read only: what libFuzzer finds goes to
# build/fuzz/<target>/corpus/) and fails on the first crash, leak of
# mounts or files a target checks, hang or timeout. Prints each target's
# runs, executions per second and coverage, then the total time.
#
# Environment: FUZZ_SECONDS (30) per target; FUZZ_TARGETS (all) to run
# some; FUZZ_OUT (build/fuzz) for the found inputs and crash artifacts.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
seconds="${FUZZ_SECONDS:-30}"
out="${FUZZ_OUT:-$repo/build/fuzz}"
read -r -a targets <<< "${FUZZ_TARGETS:-ttrpc_frame requests config oci_spec mount_options copy_file}"

start=$SECONDS
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$out/$t/corpus"
    log="$out/$t/log"
    echo "fuzz-smoke: $t for $seconds s ..."
    # -timeout: one input taking longer is a hang; the handlers answer in
    # milliseconds. -rss_limit_mb: the agent's memory is bounded.
    if "$here/run.sh" "$t" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="$out/$t/" \
        "$out/$t/corpus" "$here/corpus/$t" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
        corp=$(find "$out/$t/corpus" "$here/corpus/$t" -type f | wc -l)
        echo "fuzz-smoke: $t: ${runs:-?} inputs, ${rate:-?} exec/s, ${cov:-cov: ?}, corpus $corp"
    else
        echo "fuzz-smoke: $t: FAILED (log $log)"
        grep -E -A30 'panicked|ERROR: libFuzzer|==[0-9]+==|Test unit written' "$log" | head -n 60 || tail -n 40 "$log"
        failed+=("$t")
    fi
done
echo "fuzz-smoke: ${#targets[@]} targets in $((SECONDS - start)) s"
if ((${#failed[@]})); then
    echo "fuzz-smoke: crashed: ${failed[*]}" >&2
    exit 1
fi

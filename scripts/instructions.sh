#!/usr/bin/env bash
# Instructions per hot-key check under callgrind, for each contender.
# Runs every contender at two loop counts and divides the difference, so
# setup cost (limiter construction, clock calibration) cancels out.
# Usage: scripts/instructions.sh [contender ...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/callgrind_lib.sh
bin=$(bench_binary instructions --features redis)
# Counts the main thread only (the one that checks), except for near_cache,
# whose Redis traffic for those checks runs on other threads.
per_check() {
    local main=1
    [[ "$1" == near_cache ]] && main=0
    CALLGRIND_MAIN_THREAD=$main per_op "$bin" "$1" 100000 8100000
}
# The benchmark loop itself (black_box, sum, counter) is measured alone and
# subtracted, so the net column is the check's own cost.
base=$(per_check baseline)
printf '%-14s %8s %8s\n' contender loop net
for who in ${@:-fg_gcra fg_window fg_gcra_tsc fg_gcra_at fg_window_at governor}; do
    n=$(per_check "$who")
    printf '%-14s %8s %8s\n' "$who" "$n" "$(( n - base ))"
done
printf '%-14s %8s\n' "(loop alone)" "$base"

#!/usr/bin/env bash
# Instructions per hot-key check under callgrind, for each contender.
# Runs every contender at two loop counts and divides the difference, so
# setup cost (limiter construction, clock calibration) cancels out.
# Usage: scripts/instructions.sh [contender ...]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --example instructions --features redis -q
bin=target/release/examples/instructions
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
total() {
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" "$1" "$2" >/dev/null 2>"$out/log"
    grep -E '^(summary|totals):' "$out/cg" | tail -1 | awk '{print $2}'
}
small=100000
large=4100000
per_check() {
    local a b
    a=$(total "$1" $small)
    b=$(total "$1" $large)
    echo $(( (b - a) / (large - small) ))
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

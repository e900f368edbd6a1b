#!/usr/bin/env bash
# Instructions per hot-key check under callgrind, for each contender.
# Runs every contender at two loop counts and divides the difference, so
# setup cost (limiter construction, clock calibration) cancels out.
# Usage: scripts/instructions.sh [contender ...]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --example instructions -q
bin=target/release/examples/instructions
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
total() {
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" "$1" "$2" >/dev/null 2>"$out/log"
    grep -E '^(summary|totals):' "$out/cg" | tail -1 | awk '{print $2}'
}
small=100000
large=1100000
printf '%-14s %s\n' contender instructions/check
for who in "${@:-fg_gcra fg_window fg_gcra_tsc fg_gcra_at fg_window_at governor}"; do
    for w in $who; do
        a=$(total "$w" $small)
        b=$(total "$w" $large)
        printf '%-14s %s\n' "$w" "$(( (b - a) / (large - small) ))"
    done
done

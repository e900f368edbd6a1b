#!/usr/bin/env bash
# Instructions per request of an axum router serving /hello in-process,
# bare and behind the whole floodguard layer (default rules, default
# scoring, per-route overload protection; nothing refused or shed), under
# callgrind. Runs each mode at two request counts and divides the
# difference, so setup (runtime, tables, clock calibration) cancels out.
# Usage: scripts/layer_instructions.sh [--annotate]
#   --annotate  also keeps the full run's profile and prints the top
#               inclusive costs (callgrind_annotate --inclusive=yes)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --example layer_instructions --features axum -q
bin=target/release/examples/layer_instructions
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
total() {
    valgrind --tool=callgrind --callgrind-out-file="$out/cg-$1-$2" "$bin" "$1" "$2" >/dev/null 2>"$out/log"
    grep -E '^(summary|totals):' "$out/cg-$1-$2" | tail -1 | awk '{print $2}'
}
small=20000
large=100000
per_request() {
    local a b
    a=$(total "$1" $small)
    b=$(total "$1" $large)
    echo $(( (b - a) / (large - small) ))
}
bare=$(per_request bare)
full=$(per_request full)
printf '%-6s %8s\n' mode instr/req
printf '%-6s %8s\n' bare "$bare"
printf '%-6s %8s\n' full "$full"
printf 'layer: %s instructions per request, %s%% of bare\n' \
    "$(( full - bare ))" "$(( (full - bare) * 100 / bare ))"
if [[ "${1:-}" == "--annotate" ]]; then
    callgrind_annotate --inclusive=yes "$out/cg-full-$large" 2>/dev/null | head -80
fi

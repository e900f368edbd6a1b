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
source scripts/callgrind_lib.sh
bin=$(bench_binary layer_instructions --features axum)
large=100000
per_request() { per_op "$bin" "$1" 20000 "$large"; }
bare=$(per_request bare)
full=$(per_request full)
printf '%-6s %8s\n' mode instr/req
printf '%-6s %8s\n' bare "$bare"
printf '%-6s %8s\n' full "$full"
printf 'layer: %s instructions per request, %s%% of bare\n' \
    "$(( full - bare ))" "$(( (full - bare) * 100 / bare ))"
if [[ "${1:-}" == "--annotate" ]]; then
    callgrind_annotate --inclusive=yes "$callgrind_out/cg-full-$large" 2>/dev/null | head -80
fi

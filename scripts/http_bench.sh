#!/usr/bin/env bash
# Bare axum vs axum + floodguard vs axum + tower_governor under wrk.
# Installs wrk (Debian's package) when it is missing. Arguments go to
# benches/http_bench.rs: [rounds] [seconds per run], by default 3 rounds of
# 4 s (about 4 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
    echo "installing wrk (apt-get install wrk)" >&2
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
[[ $# -gt 0 ]] || set -- 3 4
exec cargo bench --all-features --bench http_bench -- "$@"

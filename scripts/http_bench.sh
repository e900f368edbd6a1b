#!/usr/bin/env bash
# Bare axum vs axum + floodguard vs axum + tower_governor under wrk.
# Installs wrk (Debian's package) when it is missing. Arguments go to the
# example: [rounds] [seconds per run].
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
    echo "installing wrk (apt-get install wrk)" >&2
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
exec cargo run --release --all-features --example http_bench -- "$@"

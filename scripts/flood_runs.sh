#!/usr/bin/env bash
# Runs the flood harness N times with the same options and prints the
# ranges of its figures over the runs (scripts/flood_ranges.py):
#
#   scripts/flood_runs.sh 5 --scenario detection --defence floodguard
#
# Each run's JSON goes to target/flood-runs/<label>-<k>.json, where the
# label is FLOOD_LABEL (default: runs); the table is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

n="${1:?usage: scripts/flood_runs.sh N [flood options]}"
shift
label="${FLOOD_LABEL:-runs}"
out=target/flood-runs
mkdir -p "$out"
cargo build --release -p floodguard-demo
files=()
for k in $(seq 1 "$n"); do
    echo "== run $k of $n" >&2
    ./target/release/flood "$@" --no-svg --json "$out/$label-$k.json"
    files+=("$out/$label-$k.json")
done
python3 scripts/flood_ranges.py "${files[@]}"

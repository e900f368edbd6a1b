# Sourced by instructions.sh and layer_instructions.sh: instructions per
# operation under callgrind, from two runs of different lengths, so that
# setup (construction, clock calibration) cancels out.
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
callgrind_out=$(mktemp -d)
trap 'rm -rf "$callgrind_out"' EXIT

# bench_binary NAME [CARGO FLAG ...]: builds benches/NAME.rs (a
# `harness = false` bench, in cargo's bench profile) and prints the path of
# its executable, which cargo names target/release/deps/NAME-HASH: the path
# is read from cargo's own report of what it built.
bench_binary() {
    local name=$1
    shift
    cargo bench --no-run -q --bench "$name" "$@" --message-format=json |
        python3 -c '
import json, sys
name = sys.argv[1]
built = [m["executable"] for m in map(json.loads, sys.stdin)
         if m.get("reason") == "compiler-artifact" and m["target"]["name"] == name
         and "bench" in m["target"]["kind"] and m.get("executable")]
if not built:
    sys.exit(f"cargo reported no executable for bench {name}")
print(built[-1])
' "$name"
}

# total BIN MODE N: instructions of one run (profile kept as cg-MODE-N).
# With CALLGRIND_MAIN_THREAD=1, only the main thread's: a background
# thread that runs on a timer (floodguard's coarse clock ticks every
# millisecond) does work in proportion to how long the run takes under
# valgrind, not to what it does, and would add a few instructions per
# operation that move with the machine's load.
total() {
    local out="$callgrind_out/cg-$2-$3"
    if [[ "${CALLGRIND_MAIN_THREAD:-0}" == 1 ]]; then
        valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out" "$1" "$2" "$3" >/dev/null 2>"$callgrind_out/log"
        mv "$out-01" "$out"
    else
        valgrind --tool=callgrind --callgrind-out-file="$out" "$1" "$2" "$3" >/dev/null 2>"$callgrind_out/log"
    fi
    grep -E '^(summary|totals):' "$out" | tail -1 | awk '{print $2}'
}

# per_op BIN MODE SMALL LARGE: instructions per operation of MODE.
per_op() {
    local a b
    a=$(total "$1" "$2" "$3")
    b=$(total "$1" "$2" "$4")
    echo $(( (b - a) / ($4 - $3) ))
}

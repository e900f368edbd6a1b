# Sourced by instructions.sh and layer_instructions.sh: instructions per
# operation under callgrind, from two runs of different lengths, so that
# setup (construction, clock calibration) cancels out.
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
callgrind_out=$(mktemp -d)
trap 'rm -rf "$callgrind_out"' EXIT

# total BIN MODE N: instructions of one run (profile kept as cg-MODE-N).
total() {
    valgrind --tool=callgrind --callgrind-out-file="$callgrind_out/cg-$2-$3" "$1" "$2" "$3" >/dev/null 2>"$callgrind_out/log"
    grep -E '^(summary|totals):' "$callgrind_out/cg-$2-$3" | tail -1 | awk '{print $2}'
}

# per_op BIN MODE SMALL LARGE: instructions per operation of MODE.
per_op() {
    local a b
    a=$(total "$1" "$2" "$3")
    b=$(total "$1" "$2" "$4")
    echo $(( (b - a) / ($4 - $3) ))
}

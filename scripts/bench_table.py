#!/usr/bin/env python3
"""Prints the core benchmark results as a Markdown table of ratios.

Reads criterion's estimates (target/criterion/<group>/<function>/new/
estimates.json) written by `cargo bench --bench core`, and puts each
floodguard figure beside governor's from the same run.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"


def mean_ns(group, function):
    path = ROOT / group / function / "new" / "estimates.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["mean"]["point_estimate"]


def row(case, fg, gov, note=""):
    if fg is None or gov is None:
        return f"| {case} | – | – | – | missing: run `cargo bench --bench core` |"
    return f"| {case} | {fg:.1f} | {gov:.1f} | {fg / gov:.2f}× | {note} |"


def main():
    if not ROOT.exists():
        sys.exit("no criterion results: run `cargo bench --bench core` first")
    print("floodguard on its default clock (1 ms, refreshed in the background),")
    print("governor on its default clock (TSC), unless the case says otherwise.\n")
    print("| case | floodguard ns | governor ns | ratio | note |")
    print("|---|---:|---:|---:|---|")
    for group, case in [
        ("hot_key", "hot key"),
        ("keys_10k_round_robin", "10k keys round-robin"),
        ("keys_1m_random", "1M IPv6 keys, random order"),
        ("insert_new_key", "insert a new key"),
        ("deny_path", "deny path"),
    ]:
        gov = mean_ns(group, "governor")
        for algo in ("fg_gcra", "fg_window"):
            print(row(f"{case} ({algo[3:]})", mean_ns(group, algo), gov))
        if group == "hot_key":
            print(row("hot key, both on the exact TSC clock (gcra)",
                      mean_ns(group, "fg_gcra_tsc"), gov))
            print(row("hot key, both on a 1 ms background clock (gcra)",
                      mean_ns(group, "fg_gcra"), mean_ns(group, "governor_coarse")))
            print(row("hot key, clock read once per request (gcra, check_at)",
                      mean_ns(group, "fg_gcra_at"), gov, "governor has no such call"))
    for group, case, fg in [
        ("threads_distinct_keys", "2 threads, distinct keys (table at 1.6× keys)", "fg_gcra"),
        ("threads_distinct_keys", "2 threads, distinct keys (default 100k table)", "fg_gcra_default"),
        ("threads_distinct_keys", "2 threads, distinct keys (sparse 4M table)", "fg_gcra_sparse"),
        ("threads_one_key", "2 threads, one key", "fg_gcra"),
    ]:
        fg1, fg2 = mean_ns(group, f"{fg}/1"), mean_ns(group, f"{fg}/2")
        gv1, gv2 = mean_ns(group, "governor/1"), mean_ns(group, "governor/2")
        if None in (fg1, fg2, gv1, gv2):
            print(row(case, None, None))
            continue
        # One iteration is one check on each thread: throughput of two
        # threads relative to one is 2 × t(1) / t(2).
        fs, gs = 2 * fg1 / fg2, 2 * gv1 / gv2
        print(f"| {case}: throughput vs 1 thread | {fs:.2f}× | {gs:.2f}× | – | per-check time {fg2:.1f} vs {gv2:.1f} ns |")
    clock = [mean_ns("clock", f) for f in ("monotonic_clock", "std_clock")]
    if None not in clock:
        print(f"| clock read (TSC vs Instant) | {clock[0]:.1f} | {clock[1]:.1f} | {clock[0] / clock[1]:.2f}× | std clock in the governor column |")


if __name__ == "__main__":
    main()

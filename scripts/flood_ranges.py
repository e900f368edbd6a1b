#!/usr/bin/env python3
"""Ranges over several runs of the flood harness.

    scripts/flood_runs.sh 5 --scenario detection --defence floodguard
    scripts/flood_ranges.py target/flood-runs/*.json

Reads the `--json` files of several runs and prints, per scenario and
defence, the lowest and highest value of each figure over the runs
(`lo-hi`, or one value when all runs agree; p99 ratios with their
median) as a Markdown table.
"""
import json
import sys
from collections import defaultdict


def pct(x):
    return None if x is None else 100.0 * x


def span(values, fmt, median=False):
    values = sorted(v for v in values if v is not None)
    if not values:
        return "-"
    lo, hi = fmt(values[0]), fmt(values[-1])
    if lo == hi:
        return lo
    mid = f" (median {fmt(values[len(values) // 2])})" if median and len(values) > 2 else ""
    return f"{lo}-{hi}{mid}"


def banned_within(run, ms):
    """Bots banned within `ms` of the attack's start (from the events)."""
    c = run["confusion"]
    if not c.get("bots"):
        return None
    started = next((e["unix_ms"] for e in run["events"] if e["kind"] == "attack-started"), None)
    if started is None or run.get("detected_after_ms") is None:
        return 0
    attack_start = started - run["detected_after_ms"]
    return sum(
        1
        for e in run["events"]
        if e["kind"] == "client-banned" and e["unix_ms"] <= attack_start + ms
    )


COLUMNS = [
    ("legit ok", lambda r: pct(r["legit_success"]), lambda v: f"{v:.2f}%"),
    ("legit refused", lambda r: pct(r["confusion"]["legit_refused_share"]), lambda v: f"{v:.2f}%"),
    ("legit p99 vs no attack", lambda r: r["p99_vs_baseline"], lambda v: f"{v:.1f}×", True),
    ("after 1 s", lambda r: r["settled_vs_baseline"], lambda v: f"{v:.1f}×", True),
    ("known-good ok", lambda r: pct((r.get("known_good") or {}).get("success")), lambda v: f"{v:.2f}%"),
    ("known-good p99", lambda r: (r.get("known_good") or {}).get("p99_vs_baseline"), lambda v: f"{v:.1f}×", True),
    ("search goodput", lambda r: pct((r.get("goodput") or {}).get("ratio")), lambda v: f"{v:.0f}%"),
    ("legit banned", lambda r: r["legit_banned"], lambda v: f"{v}"),
    ("legit throttled / challenged", lambda r: r["confusion"]["legit_throttled"] + r["confusion"]["legit_challenged"], lambda v: f"{v}"),
    ("attack admitted", lambda r: pct(r["attack_admitted_share"]) if r["attack_sent"] else None, lambda v: f"{v:.1f}%"),
    ("detected after", lambda r: r.get("detected_after_ms"), lambda v: f"{v / 1000:.1f} s"),
    ("admitted after detection", lambda r: pct(r.get("admitted_after_detection")), lambda v: f"{v:.1f}%"),
    ("bots banned ≤ 10 s", lambda r: banned_within(r, 10_000), lambda v: f"{v}"),
    ("bots banned / held / missed", None, None),
    ("attack declared / ended after", None, None),
    ("false alarms", lambda r: r.get("false_alarms"), lambda v: f"{v}"),
]


def main(paths):
    groups = defaultdict(list)
    order = []
    for path in paths:
        with open(path) as f:
            for run in json.load(f):
                key = (run["scenario"], run["defence"])
                if key not in groups:
                    order.append(key)
                groups[key].append(run)
    print("| scenario | defence | runs | " + " | ".join(c[0] for c in COLUMNS) + " |")
    print("|---|---|---:|" + "---:|" * len(COLUMNS))
    for key in order:
        runs = groups[key]
        cells = []
        for name, get, fmt, *median in COLUMNS:
            if name.startswith("bots banned /"):
                c = [r["confusion"] for r in runs]
                if not c[0].get("bots"):
                    cells.append("-")
                    continue
                cells.append(" / ".join(span([x[k] for x in c], str) for k in ("bots_banned", "bots_held", "bots_missed")))
            elif name.startswith("attack declared"):
                c = [r["confusion"] for r in runs]
                f = lambda v: f"{v / 1000:.1f} s"
                cells.append(span([x.get("declared_after_ms") for x in c], f) + " / " + span([x.get("ended_after_ms") for x in c], f))
            else:
                cells.append(span([get(r) for r in runs], fmt, bool(median)))
        print(f"| {key[0]} | {key[1]} | {len(runs)} | " + " | ".join(cells) + " |")
    print()
    print("p99 ratios: lowest-highest over the runs, with the median; a ratio's")
    print("spread on a row without any attack (mixed-clients) is this machine's noise.")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])

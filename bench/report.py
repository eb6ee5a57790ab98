#!/usr/bin/env python3
"""bench/run's arithmetic: hyperfine exports in, the summary table out.

  report.py hyperfine NAME FILE...   mean, stddev (ms) and runs of command
                                     NAME, pooled over several exports
  report.py wrk FILE                 requests/s, p50 and p99 (us) of wrk --latency
  report.py summary RESULTS.tsv      the table of ratios against the targets

A results row is: metric, unbaked, reference, unit, target, detail. The
target is `ratio<=X` (unbaked / reference), `<=X`, `>=X` or `==X` (on the
unbaked figure), or `-` (reported, no target).
"""
import json
import math
import re
import sys


def hyperfine(name, files):
    times = []
    for f in files:
        for r in json.load(open(f))["results"]:
            if r["command"] == name:
                times.extend(r["times"])
    if not times:
        sys.exit(f"report.py: no runs of {name!r} in {files}")
    mean = sum(times) / len(times)
    sd = math.sqrt(sum((t - mean) ** 2 for t in times) / max(len(times) - 1, 1))
    print(f"{mean * 1000:.3f} {sd * 1000:.3f} {len(times)}")


def wrk(path):
    text = open(path).read()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    scale = {"us": 1, "ms": 1000, "s": 1_000_000}

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        return float(m.group(1)) * scale[m.group(2)] if m else float("nan")

    if not rps:
        sys.exit(f"report.py: no Requests/sec in {path}")
    print(f"{float(rps.group(1)):.0f} {pct(50):.0f} {pct(99):.0f}")


def num(s):
    try:
        return float(s)
    except ValueError:
        return None


def fmt(v):
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def verdict(target, value, ratio):
    m = re.fullmatch(r"(ratio)?(<=|>=|==|<|>)([\d.]+)", target)
    if not m:
        return "-"
    x = ratio if m.group(1) else value
    if x is None:
        return "n/a"
    op, bound = m.group(2), float(m.group(3))
    ok = {
        "<=": x <= bound,
        ">=": x >= bound,
        "==": x == bound,
        "<": x < bound,
        ">": x > bound,
    }[op]
    return "met" if ok else "MISSED"


def summary(path):
    rows = [line.rstrip("\n").split("\t") for line in open(path) if line.strip()]
    head = ["measure", "unbaked", "reference", "unit", "ratio", "target", "result"]
    table = []
    for metric, u, ref, unit, target, detail in rows:
        uv, rv = num(u), num(ref)
        ratio = uv / rv if uv is not None and rv not in (None, 0.0) else None
        shown_ratio = "-" if ratio is None else (f"{ratio:.3f}" if ratio < 10 else f"{ratio:.1f}")
        table.append(
            [metric, fmt(uv), fmt(rv), unit, shown_ratio, target, verdict(target, uv, ratio)]
        )
    widths = [max(len(r[i]) for r in table + [head]) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in table:
        print(line(r))
    print()
    for metric, *_, detail in rows:
        if detail:
            print(f"- {metric}: {detail}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "hyperfine":
        hyperfine(args[0], args[1:])
    elif cmd == "wrk":
        wrk(args[0])
    elif cmd == "summary":
        summary(args[0])
    else:
        sys.exit(__doc__)

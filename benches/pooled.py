#!/usr/bin/env python3
"""Pool several runs of ../shared/bench (their raw.jsonl files) into one median per row.

    benches/pooled.py RUN1/raw.jsonl RUN2/raw.jsonl ...   -> a Markdown table

The shared bench runs every repetition of one setup before the next setup, so a noisy
minute lands on one row; repeating the whole run and pooling the repetitions spreads the
noise over every row. Per (setup, test): the median server CPU per request over all
repetitions, their count, the lowest and highest, and the gateway's ratio to the best of
the other setups' medians (what the targets are judged by).
"""
import collections
import json
import statistics
import sys

rows = collections.defaultdict(list)
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            v = r.get("server_us_per_req")
            if r.get("exit") == 0 and isinstance(v, (int, float)) and v > 0:
                rows[(r["setup"], r["test"])].append(v)
if not rows:
    sys.exit("pooled.py: no repetitions with a server CPU figure")

tests = sorted({t for _, t in rows})
setups = sorted({s for s, _ in rows}, key=lambda s: (s == "gateway", s))
print("| test | setup | reps | median us/req | min | max | gateway / best peer |")
print("|---|---|---:|---:|---:|---:|---:|")
for t in tests:
    med = {s: statistics.median(rows[(s, t)]) for s in setups if rows.get((s, t))}
    peers = [m for s, m in med.items() if s != "gateway"]
    for s in setups:
        v = rows.get((s, t))
        if not v:
            continue
        ratio = ""
        if s == "gateway" and peers:
            ratio = f"{med[s] / min(peers):.2f}"
        print(f"| {t} | {s} | {len(v)} | {med[s]:.1f} | {min(v):.1f} | {max(v):.1f} | {ratio} |")

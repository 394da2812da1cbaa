#!/usr/bin/env python3
"""ka-h2's figures from a ../shared/bench raw.jsonl (benches/shared-bench.sh h2-front): the
median of each setup's repetitions, and the gateway's CPU per request against the best of
nginx1 and HAProxy (issue 23's target: at most 0.90)."""
import json
import statistics
import sys

rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("test") != "ka-h2" or "error" in r:
        continue
    rows.setdefault(r["setup"], []).append(r)


def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


print("| setup | test | req/s | mean us | server CPU % | server us/req | loadgen CPU % | cpu0/cpu1 busy % | errors | protocol |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
for setup, rs in rows.items():
    print(
        f"| {setup} | ka-h2 | {med(rs, 'rps'):,.0f} | {med(rs, 'mean_us')} | {med(rs, 'server_cpu_pct')} "
        f"| {med(rs, 'server_us_per_req')} | {med(rs, 'loadgen_cpu_pct')} "
        f"| {med(rs, 'cpu0_busy_pct')}/{med(rs, 'cpu1_busy_pct')} | {sum(r.get('errors') or 0 for r in rs)} "
        f"| {rs[0].get('negotiated')} |"
    )
peers = [med(rows[s], "server_us_per_req") for s in ("nginx1", "haproxy1") if s in rows]
gw = med(rows["gateway"], "server_us_per_req") if "gateway" in rows else None
if gw and peers:
    best = min(peers)
    print(f"\ngateway / best peer, CPU per HTTP/2 request: {gw / best:.2f} (target <= 0.90)")

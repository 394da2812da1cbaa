#!/usr/bin/env bash
# h2load for ../shared/bench/run.sh's measure(): run h2load with the given arguments and print
# its figures as the one JSON result line the bench reads ({"tool": ...}). h2load reports the
# mean and spread of request times, not percentiles, so p50/p99 stay empty; the server's CPU
# per request (the figure the targets use) comes from the bench itself.
set -uo pipefail
out=$(mktemp)
trap 'rm -f "$out"' EXIT
h2load "$@" > "$out" 2>&1
cat "$out" >&2
python3 - "$out" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
def num(pat, cast=float):
    m = re.search(pat, text, re.M)
    return cast(m[1].replace(",", "")) if m else None
rps = num(r"finished in [0-9.]+m?s, ([0-9.]+) req/s")
done = num(r"^requests: \d+ total, \d+ started, (\d+) done", int)
ok = num(r"^requests: .* (\d+) succeeded", int)
failed = num(r"^requests: .* (\d+) failed", int) or 0
errored = num(r"^requests: .* (\d+) errored", int) or 0
non2xx = num(r"^status codes: \d+ 2xx, (\d+) 3xx", int) or 0
bad = (num(r"^status codes: \d+ 2xx, \d+ 3xx, (\d+) 4xx", int) or 0) + (num(r"^status codes: .* (\d+) 5xx", int) or 0)
mean = None
m = re.search(r"^time for request:\s+\S+\s+\S+\s+(\S+)", text, re.M)
if m:
    v = m[1]
    scale = 1.0 if v.endswith("us") else 1000.0 if v.endswith("ms") else 1e6
    mean = round(float(re.sub(r"[a-z]+$", "", v)) * scale, 1)
proto = re.search(r"^Application protocol: (\S+)", text, re.M)
print("JSON " + json.dumps({"tool": "h2load", "rps": rps, "requests": ok, "errors": failed + errored + non2xx + bad,
                            "mean_us": mean, "p50_us": None, "p99_us": None,
                            "negotiated": proto[1] if proto else None, "mode": "h2"}))
sys.exit(0 if rps else 1)
PY

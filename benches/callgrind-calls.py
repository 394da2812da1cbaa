#!/usr/bin/env python3
"""Instructions per request from a callgrind dump (benches/profile.sh CALLGRIND=1).

    callgrind-calls.py DUMP FUNCTION [PER]  -> total Ir, calls to FUNCTION, Ir per call

FUNCTION is a substring of a function called PER times per request (default 1): the count of
its calls in the dump's window, divided by PER, is the request count.
"""
import collections
import re
import sys

names = {}
calls = collections.Counter()
cur = None
total = None
with open(sys.argv[1], errors="replace") as f:
    for line in f:
        m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
        if m:
            if m.group(2):
                names[m.group(1)] = m.group(2).strip()
            if line.startswith("cfn="):
                cur = m.group(1)
            continue
        if line.startswith("calls="):
            calls[cur] += int(line.split("=")[1].split()[0])
        elif line.startswith(("totals:", "summary:")):
            total = int(line.split()[1])
want = sys.argv[2]
per = int(sys.argv[3]) if len(sys.argv) > 3 else 1
n = sum(c for i, c in calls.items() if want in names.get(i, "")) // per
if not total or not n:
    sys.exit(f"callgrind-calls.py: no instructions or no calls to {want} in {sys.argv[1]}")
print(f"{total} instructions, {n} requests ({want}): {total // n} instructions per request")

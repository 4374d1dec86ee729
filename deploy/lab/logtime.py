#!/usr/bin/env python3
"""logtime.py LOG T0 NEEDLE...: milliseconds from T0 (epoch seconds) to the first line of LOG
(a gateway log: RFC 3339 timestamp first) at or after T0 that contains every NEEDLE."""
import datetime
import re
import sys

log, t0, needles = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
for line in open(log, errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    if all(n in line for n in needles):
        stamp = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
        if stamp >= t0:
            print(int((stamp - t0) * 1000))
            break

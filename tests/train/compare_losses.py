#!/usr/bin/env python3
"""Exit 0 when two runs' per-step losses (metrics.jsonl records with "step",
written with log.every_steps: 1) agree within 1e-5 relative over steps
FIRST..LAST, which both runs must have.
usage: compare_losses.py A/metrics.jsonl B/metrics.jsonl FIRST LAST
(standard library only)"""
import json
import sys


def steps(path):
    with open(path) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "step" in r}


a, b = steps(sys.argv[1]), steps(sys.argv[2])
first, last = int(sys.argv[3]), int(sys.argv[4])
wanted = range(first, last + 1)
missing = [s for s in wanted if s not in a or s not in b]
if missing:
    print(f"steps missing from a run: {missing[:5]}")
    sys.exit(1)
worst = max(abs(a[s] - b[s]) / abs(b[s]) for s in wanted)
print(f"steps {first}-{last}: largest relative loss difference {worst:.2e}")
sys.exit(0 if worst <= 1e-5 else 1)

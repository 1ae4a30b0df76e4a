#!/usr/bin/env python3
"""Exit 0 when two safetensors checkpoints hold the same tensors (metadata
may differ): bitwise, or with --rtol R within relative L2 error R group by
group: the trainable parameters, the BatchNorm running statistics and the
momentum buffers, each as one vector (all tensors of the group concatenated).
A single tensor of near-zero values (a BatchNorm bias after a few steps at
a small lr) has no meaningful relative error of its own; the worst tensor
is printed for information. Momentum buffers are sums of recent gradients,
themselves sums with heavy cancellation, so they get their own tolerance
(--rtol-momentum, default 100 R). Integer tensors must be equal.
--spread K C D raises each group's limit to K times that group's error
between checkpoints C and D: two runs that differ only in the order of
their float additions (the CPU backend with 1 thread and with several), so
the limit follows how far such differences grow in the run compared.
usage: compare_checkpoints.py [--rtol R [--rtol-momentum M] [--spread K C D]] A B
(standard library only)"""
import array
import json
import math
import struct
import sys


def tensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    payload = data[8 + n:]
    return {k: (v["dtype"], v["shape"], payload[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items()}


def group_of(name):
    if name.startswith("optimizer."):
        return "momentum"
    if ".running_" in name:
        return "running statistics"
    return "parameters"


def squares(x, y):
    xs, ys = array.array("f", x), array.array("f", y)
    return sum((p - q) ** 2 for p, q in zip(xs, ys)), sum(q * q for q in ys)


def group_errors(a, b, rtol):
    """{group: relative L2 error} and the worst single tensor (error, name);
    None, with the reason printed, when A and B cannot be compared."""
    if a.keys() != b.keys():
        print("different tensor names:", sorted(a.keys() ^ b.keys())[:5])
        return None
    groups, worst = {}, (0.0, None)
    for name in a:
        if a[name] == b[name]:
            continue
        dtype, shape, data = a[name]
        if rtol is None or dtype != "F32" or (dtype, shape) != b[name][:2]:
            print("tensor differs:", name)
            return None
        err, norm = squares(data, b[name][2])
        total = groups.setdefault(group_of(name), [0.0, 0.0])
        total[0] += err
        total[1] += norm
        worst = max(worst, (math.sqrt(err / norm) if norm else math.sqrt(err), name))
    return {g: math.sqrt(e / n) if n else math.sqrt(e) for g, (e, n) in groups.items()}, worst


args = sys.argv[1:]
rtol = rtol_momentum = spread = None
if args[0] == "--rtol":
    rtol, args = float(args[1]), args[2:]
    rtol_momentum = 100 * rtol
if args[0] == "--rtol-momentum":
    rtol_momentum, args = float(args[1]), args[2:]
if args[0] == "--spread":
    spread, args = (float(args[1]), args[2], args[3]), args[4:]
a = tensors(args[0])
found = group_errors(a, tensors(args[1]), rtol)
if found is None:
    sys.exit(1)
groups, worst = found
reference = {}
if spread:
    factor, c, d = spread
    between = group_errors(tensors(c), tensors(d), rtol)
    if between is None:
        sys.exit(2)
    reference = between[0]
bad = False
for group, rel in groups.items():
    limit = rtol_momentum if group == "momentum" else rtol
    how = f"limit {limit:g}"
    if group in reference:
        limit = max(limit, factor * reference[group])
        how = f"limit {limit:.3g}: the larger of {how} and {factor:g} x {reference[group]:.3g} between the spread's two"
    print(f"{group}: relative L2 error {rel:.3g} ({how})")
    bad |= rel > limit
if worst[1]:
    print(f"(worst single tensor: {worst[1]}, {worst[0]:.3g})")
print(f"{len(a)} tensors " + ("identical" if not groups else "NOT within limits" if bad else "within limits"))
sys.exit(1 if bad else 0)

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
usage: compare_checkpoints.py [--rtol R [--rtol-momentum M]] A B
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


args = sys.argv[1:]
rtol = rtol_momentum = None
if args[0] == "--rtol":
    rtol, args = float(args[1]), args[2:]
    rtol_momentum = 100 * rtol
if args[0] == "--rtol-momentum":
    rtol_momentum, args = float(args[1]), args[2:]
a, b = tensors(args[0]), tensors(args[1])
if a.keys() != b.keys():
    print("different tensor names:", sorted(a.keys() ^ b.keys())[:5])
    sys.exit(1)
groups, worst = {}, (0.0, None)
for name in a:
    if a[name] == b[name]:
        continue
    dtype, shape, data = a[name]
    if rtol is None or dtype != "F32" or (dtype, shape) != b[name][:2]:
        print("tensor differs:", name)
        sys.exit(1)
    err, norm = squares(data, b[name][2])
    total = groups.setdefault(group_of(name), [0.0, 0.0])
    total[0] += err
    total[1] += norm
    worst = max(worst, (math.sqrt(err / norm) if norm else math.sqrt(err), name))
bad = False
for group, (err, norm) in groups.items():
    rel = math.sqrt(err / norm) if norm else math.sqrt(err)
    limit = rtol_momentum if group == "momentum" else rtol
    print(f"{group}: relative L2 error {rel:.3g} (limit {limit:g})")
    bad |= rel > limit
if worst[1]:
    print(f"(worst single tensor: {worst[1]}, {worst[0]:.3g})")
print(f"{len(a)} tensors " + ("identical" if not groups else "NOT within limits" if bad else "within limits"))
sys.exit(1 if bad else 0)

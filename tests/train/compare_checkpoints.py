#!/usr/bin/env python3
"""Exit 0 when two safetensors checkpoints hold bitwise identical tensors
(metadata may differ), else print the first difference and exit 1.
usage: compare_checkpoints.py A B  (standard library only)"""
import json
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


a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
if a.keys() != b.keys():
    print("different tensor names:", sorted(a.keys() ^ b.keys())[:5])
    sys.exit(1)
for name in a:
    if a[name] != b[name]:
        print("tensor differs:", name)
        sys.exit(1)
print(f"{len(a)} tensors identical")

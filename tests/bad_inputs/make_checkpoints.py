#!/usr/bin/env python3
"""Damaged checkpoints for tests/bad_inputs, made from checkpoints/good.safetensors.

good.safetensors is a real cresnet checkpoint of the tiny custom model in
configs/good_tiny.yaml (widths [2], blocks [1]; 4 KB), written by

    cresnet train -c tests/bad_inputs/configs/good_tiny.yaml -o data.dir=SUBSET

on the first 64 images of each CIFAR-10 file. This script writes each damaged
variant next to it; the outputs are committed, so the test needs no Python.
Rerun it after a change to the checkpoint format (and rewrite good.safetensors
first). Variants that must get past the checksum (wrong dtype, wrong shape,
missing tensor, bad metadata) are repacked with a recomputed one, so each
fails on exactly the damage it is named for.

usage: make_checkpoints.py [DIR]   (default: checkpoints/ beside this file)
"""
import json
import os
import struct
import sys


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    meta = header.pop("__metadata__")
    tensors = [(name, t["dtype"], t["shape"], data[t["data_offsets"][0]:t["data_offsets"][1]])
               for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])]
    return blob, meta, tensors


def header_bytes(text):
    raw = text.encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def pack(meta, tensors, checksum=True):
    """A well-formed file: tensors back to back, checksum recomputed."""
    payload = b"".join(t[3] for t in tensors)
    meta = dict(meta)
    if checksum:
        meta["payload_fnv1a64"] = "%016x" % fnv1a64(payload)
    else:
        meta.pop("payload_fnv1a64", None)
    header, offset = {"__metadata__": meta} if meta else {}, 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    return header_bytes(json.dumps(header, separators=(",", ":"))) + payload


def retensor(tensors, name, dtype=None, shape=None, data=None):
    out = []
    for t in tensors:
        if t[0] == name:
            t = (name, dtype or t[1], shape if shape is not None else t[2],
                 data if data is not None else t[3])
        out.append(t)
    return out


def main():
    here = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "checkpoints")
    blob, meta, tensors = read(os.path.join(here, "good.safetensors"))
    n = struct.unpack("<Q", blob[:8])[0]
    header_text = blob[8:8 + n].decode()
    without = lambda name: [t for t in tensors if t[0] != name]
    conv1 = next(t for t in tensors if t[0] == "conv1.weight")
    half = struct.pack("<%de" % (len(conv1[3]) // 4), *struct.unpack("<%df" % (len(conv1[3]) // 4), conv1[3]))
    out = {
        # structure of the file
        "empty": b"",
        "short": blob[:5],
        "header_len_huge": struct.pack("<Q", 1 << 63) + blob[8:],
        "header_len_past_end": struct.pack("<Q", len(blob)) + blob[8:],
        "header_garbage": header_bytes('{"conv1.weight": {"dtype": "F32", "shape": [2, 3, ') + blob[8 + n:],
        "header_not_json": header_bytes("this is not JSON at all") + blob[8 + n:],
        "header_not_utf8": blob[:8] + b'{"\xff\xfe' + blob[12:],
        "header_float_shape": header_bytes(header_text.replace('"shape":[2,3,3,3]', '"shape":[2.0,3,3,3]', 1)) + blob[8 + n:],
        "truncated": blob[:-100],
        "trailing_bytes": blob + b"\0" * 8,
        # tensors that do not fit the payload
        "offsets_out_of_range": header_bytes(header_text.replace('"data_offsets":[744,960]', '"data_offsets":[99744,99960]', 1)) + blob[8 + n:],
        "offsets_mismatch": header_bytes(header_text.replace('"data_offsets":[0,216]', '"data_offsets":[0,212]', 1)) + blob[8 + n:],
        "offsets_overlap": header_bytes(header_text.replace('"data_offsets":[216,224]', '"data_offsets":[208,216]', 1)) + blob[8 + n:],
        "dtype_unknown": header_bytes(header_text.replace('"dtype":"F32"', '"dtype":"F33"', 1)) + blob[8 + n:],
        "duplicate_name": header_bytes(header_text.replace('"bn1.bias"', '"bn1.weight"', 1)) + blob[8 + n:],
        # well-formed files cresnet must still refuse
        "flipped_byte": blob[:-100] + bytes([blob[-100] ^ 0x42]) + blob[-99:],
        "no_checksum": pack(meta, tensors, checksum=False),
        "no_metadata": pack({}, tensors, checksum=False),
        "wrong_dtype": pack(meta, retensor(tensors, "conv1.weight", dtype="F16", data=half)),
        "wrong_shape": pack(meta, retensor(tensors, "conv1.weight", shape=[3, 2, 3, 3])),
        "missing_tensor": pack(meta, without("linear.bias")),
        "missing_momentum": pack(meta, without("optimizer.linear.bias.momentum_buffer")),
        "counter_not_int64": pack(meta, retensor(tensors, "bn1.num_batches_tracked", dtype="F64")),
        "meta_missing_step": pack({k: v for k, v in meta.items() if k != "step"}, tensors),
        "meta_step_garbage": pack(dict(meta, step="abc"), tensors),
        "meta_epoch_negative": pack(dict(meta, epoch="-3"), tensors),
    }
    for name, data in out.items():
        with open(os.path.join(here, name + ".safetensors"), "wb") as f:
            f.write(data)
    print("wrote %d damaged checkpoints to %s" % (len(out), here))


if __name__ == "__main__":
    main()

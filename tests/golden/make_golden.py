#!/usr/bin/env python3
"""PyTorch golden-fixture generator for cresnet.

What it is
    Builds the reference CIFAR-ResNets (kuangliu style: small [16,32,64],
    medium [32,64,128,256], large [64,128,256,512], one BasicBlock per stage)
    in PyTorch, gives them a fully specified initial state (conv/linear weights
    and linear bias from cresnet's counter-based Philox RNG, reproduced here
    bit-exactly in numpy; BN affine/running stats from numpy; SGD momentum
    buffers from the Philox RNG), and records, in float64 arithmetic, one
    forward/backward/SGD step (lr 0.1, momentum 0.9, Nesterov, weight decay
    5e-4) in train and eval mode on the first 16 CIFAR-10 training images.
    The C implementation loads these fixtures and compares against them.

How to run (from the repository root)
    /opt/torchvenv/bin/python tests/golden/make_golden.py [--data DIR]

    DIR is the folder holding data_batch_1.bin (default:
    ../shared/data/cifar-10-batches-bin relative to the repository root).
    Needs torch, numpy and torchsummary (for the summary_*.txt files) only.

Outputs (tests/golden/fixtures/, committed to the repository; rerunning gives
byte-identical files, so only rerun when the specification changes)
    input.safetensors              `input` [16,3,32,32] F32, `labels` [16] I32
    {small,medium,large,custom}.safetensors  (custom: widths [8,16], blocks [2,2])
        state.<bn>.{weight,bias,running_mean,running_var}   full, F32
        init.<P>                     sampled initial conv/linear parameters
        <mode>.logits [16,10], <mode>.loss [1]               mode: train, eval
        <mode>.grad.<P>, <mode>.param.<P>, <mode>.momentum.<P>   sampled
        train.running.<bn>.running_mean / .running_var       full
        <mode>.flip_bound.{grad,param,momentum} [num params]  see flip_bounds()
    summary_{small,medium,large,custom}.txt   stdout of torchsummary.summary

Conventions
    * Parameter index p: position in list(model.named_parameters()).
    * Philox stream = (purpose << 32) | p, purpose INIT=1 (weights/biases,
      bound float32(1/sqrt(fan_in))), TEST=2 (momentum buffers, bound 0.01).
    * Input: x = (float32(pixel) / 255f - mean_f[c]) / std_f[c], each
      operation a single float32 rounding (division, not multiplication by
      a reciprocal).
    * Sampling of a tensor with n elements (flattened in PyTorch layout):
      stride = ceil(n / 2048), indices 0, stride, 2*stride, ... < n.
    * Files are safetensors written by hand (no safetensors package): u64 LE
      header length N (N % 8 == 0, padded with spaces), JSON header, data.

Precision note (for whoever sets the C-side tolerances)
    The references are float64 results rounded to float32. A float32
    implementation sees pre-ReLU values with absolute errors of about 1e-6 to
    1e-5, and with 16 images some pre-ReLU values always lie that close to
    zero, so a ReLU mask bit can flip. A flip in a late stage (few positions
    per channel, coupled through train-mode BN) moves a few channels of the
    gradients by percents of the tensor's maximum; logits and loss barely
    move. With this state PyTorch float32 itself flips one element in
    medium/train (final ReLU, |pre| ~ 5e-8). No choice of BN seed avoids
    this for every float32 evaluation order, so each model file records, per
    mode, in its metadata the smallest |pre-ReLU| of every ReLU call
    (`<mode>.relu_min_abs`) and how many elements lie within 1e-5 of zero
    (`<mode>.relu_near_zero`), in forward order.
"""

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SEED = 1234
LR = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
SAMPLE_CAP = 2048
N_IMAGES = 16
BN_SEED = 7

PURPOSE_INIT = 1
PURPOSE_TEST = 2

MODELS = {
    "small": ([16, 32, 64], [1, 1, 1], 78_042),
    "medium": ([32, 64, 128, 256], [1, 1, 1, 1], 1_228_970),
    "large": ([64, 128, 256, 512], [1, 1, 1, 1], 4_903_242),
    # Several blocks per stage: identity shortcuts chained inside a stage.
    "custom": ([8, 16], [2, 2], 11_122),
}

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

# --------------------------------------------------------------------------
# Philox4x32-10, vectorised in numpy (uint64 holding 32-bit values)
# --------------------------------------------------------------------------
PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
MASK32 = np.uint64(0xFFFFFFFF)
SHIFT32 = np.uint64(32)


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Arrays (or scalars) of 32-bit counter words, 32-bit key words (ints).
    Returns the four output words as uint64 arrays holding 32-bit values."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & MASK32 for c in (c0, c1, c2, c3))
    k0 = int(k0) & 0xFFFFFFFF
    k1 = int(k1) & 0xFFFFFFFF
    for _ in range(10):
        p0 = PHILOX_M0 * c0  # < 2^64, exact
        p1 = PHILOX_M1 * c2
        n0 = (p1 >> SHIFT32) ^ c1 ^ np.uint64(k0)
        n2 = (p0 >> SHIFT32) ^ c3 ^ np.uint64(k1)
        c0, c1, c2, c3 = n0, p1 & MASK32, n2, p0 & MASK32
        k0 = (k0 + PHILOX_W0) & 0xFFFFFFFF
        k1 = (k1 + PHILOX_W1) & 0xFFFFFFFF
    return c0, c1, c2, c3


def rng_u32(seed, stream, n):
    """Words 0..n-1 of `stream` under `seed`, as uint32."""
    nblocks = (n + 3) // 4
    block = np.arange(nblocks, dtype=np.uint64)
    zeros = np.zeros(nblocks, dtype=np.uint64)
    out = philox4x32_10(
        block & MASK32,
        block >> SHIFT32,
        zeros + np.uint64(stream & 0xFFFFFFFF),
        zeros + np.uint64(stream >> 32),
        seed & 0xFFFFFFFF,
        seed >> 32,
    )
    words = np.stack(out, axis=1).reshape(-1)[:n]  # word index = 4*block + lane
    return words.astype(np.uint32)


def rng_uniform(seed, stream, n):
    return (rng_u32(seed, stream, n) >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24)


def rng_symmetric(n, bound, seed, stream):
    u = rng_uniform(seed, stream, n)
    r = (np.float32(2.0) * u - np.float32(1.0)) * np.float32(bound)
    assert r.dtype == np.float32
    return r


def rng_stream(purpose, obj):
    return (purpose << 32) | obj


def philox_self_test():
    def one(ctr, key):
        out = philox4x32_10(*(np.array([c], dtype=np.uint64) for c in ctr), *key)
        return [int(w[0]) for w in out]

    kat = [
        ((0, 0, 0, 0), (0, 0), [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
        ),
    ]
    for ctr, key, want in kat:
        got = one(ctr, key)
        assert got == want, (ctr, key, [hex(g) for g in got])
    # The vectorised word layout agrees with the scalar definition.
    seed, stream = 0x123456789ABC, rng_stream(PURPOSE_TEST, 5)
    words = rng_u32(seed, stream, 11)
    for i in (0, 3, 4, 10):
        b = i >> 2
        ref = one((b & 0xFFFFFFFF, b >> 32, stream & 0xFFFFFFFF, stream >> 32),
                  (seed & 0xFFFFFFFF, seed >> 32))[i & 3]
        assert int(words[i]) == ref


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------
RELU_LOG = None  # list while recording pre-ReLU tensors (diagnostics only)
NEAR_ZERO = 1e-5
# ReLU inputs this close to 0 may land on either side in float32: a float32
# implementation can legitimately differ from the float64 reference by
# flipping them. Each one's effect is measured and written as a bound.
AMBIGUOUS = 1e-6  # about 2^-20: float32 resolution of activations of order 1
RELU_FLIPS = None  # {call index: [flat element indices]} whose ReLU gradient is flipped
RELU_CALLS = 0


def relu(x):
    global RELU_CALLS
    call = RELU_CALLS
    RELU_CALLS += 1
    if RELU_LOG is not None:
        RELU_LOG.append(x.detach())
    if RELU_FLIPS and call in RELU_FLIPS:
        mask = (x > 0).to(x.dtype).reshape(-1).clone()
        for i in RELU_FLIPS[call]:
            mask[i] = 1.0 - mask[i]
        return x * mask.reshape(x.shape)
    return F.relu(x)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False),
                nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1),
            )

    def forward(self, x):
        out = relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return relu(out)


class ResNet(nn.Module):
    def __init__(self, widths, blocks, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5, momentum=0.1)
        cin = widths[0]
        for s, (w, nb) in enumerate(zip(widths, blocks)):
            layers = []
            for b in range(nb):
                stride = 2 if (s > 0 and b == 0) else 1
                layers.append(BasicBlock(cin, w, stride))
                cin = w
            setattr(self, f"layer{s + 1}", nn.Sequential(*layers))
        self.num_stages = len(widths)
        self.linear = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        out = relu(self.bn1(self.conv1(x)))
        for s in range(self.num_stages):
            out = getattr(self, f"layer{s + 1}")(out)
        out = F.adaptive_avg_pool2d(out, 1)
        out = torch.flatten(out, 1)
        return self.linear(out)


def initial_state(model):
    """Deterministic initial state as float32 numpy arrays.
    Returns (params: name -> array, bn: layer -> dict, momentum: name -> array,
    init_names: names of the conv/linear parameters)."""
    modules = dict(model.named_modules())
    params, momentum, init_names = {}, {}, []
    for p, (name, t) in enumerate(model.named_parameters()):
        mod_name = name.rpartition(".")[0]
        mod = modules[mod_name]
        n = t.numel()
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            if isinstance(mod, nn.Conv2d):
                fan_in = mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]
            else:
                fan_in = mod.in_features
            bound = np.float32(1.0 / math.sqrt(fan_in))
            params[name] = rng_symmetric(n, bound, SEED, rng_stream(PURPOSE_INIT, p)).reshape(
                tuple(t.shape))
            init_names.append(name)
        else:
            assert isinstance(mod, nn.BatchNorm2d), name
        momentum[name] = rng_symmetric(n, np.float32(0.01), SEED,
                                       rng_stream(PURPOSE_TEST, p)).reshape(tuple(t.shape))

    rng = np.random.default_rng(BN_SEED)
    bn = {}
    for mod_name, mod in model.named_modules():
        if not isinstance(mod, nn.BatchNorm2d):
            continue
        c = mod.num_features
        sym = lambda: 2.0 * rng.random(c) - 1.0  # noqa: E731
        st = {
            "weight": (1.0 + 0.2 * sym()).astype(np.float32),
            "bias": (0.2 * sym()).astype(np.float32),
            "running_mean": (0.3 * sym()).astype(np.float32),
            "running_var": (0.5 + rng.random(c)).astype(np.float32),
        }
        bn[mod_name] = st
        params[mod_name + ".weight"] = st["weight"]
        params[mod_name + ".bias"] = st["bias"]
    return params, bn, momentum, init_names


def load_state(model, params, bn):
    with torch.no_grad():
        for name, t in model.named_parameters():
            t.copy_(torch.from_numpy(params[name]).to(t.dtype))
        modules = dict(model.named_modules())
        for mod_name, st in bn.items():
            m = modules[mod_name]
            m.running_mean.copy_(torch.from_numpy(st["running_mean"]).to(m.running_mean.dtype))
            m.running_var.copy_(torch.from_numpy(st["running_var"]).to(m.running_var.dtype))
            m.num_batches_tracked.zero_()


# --------------------------------------------------------------------------
# safetensors, by hand
# --------------------------------------------------------------------------
DTYPES = {"F32": np.dtype("<f4"), "I32": np.dtype("<i4")}


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, array); arrays are converted to F32 unless int32."""
    header = {"__metadata__": dict(metadata)}
    blobs, offset = [], 0
    seen = set()
    for name, arr in tensors:
        assert name not in seen, name
        seen.add(name)
        arr = np.asarray(arr)
        if arr.dtype == np.int32:
            dt = "I32"
        else:
            dt = "F32"
        data = np.ascontiguousarray(arr.astype(DTYPES[dt])).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    out, end = {}, 0
    for name, info in header.items():
        b, e = info["data_offsets"]
        assert b == end, (name, b, end)  # packed back to back
        arr = np.frombuffer(data[b:e], dtype=DTYPES[info["dtype"]])
        out[name] = arr.reshape(info["shape"])
        end = e
    assert end == len(data)
    return meta, out


def sample(arr):
    flat = np.asarray(arr).reshape(-1)
    n = flat.size
    stride = -(-n // SAMPLE_CAP)
    return flat[0:n:stride]


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------
def load_input(data_dir):
    path = os.path.join(data_dir, "data_batch_1.bin")
    with open(path, "rb") as f:
        raw = f.read(3073 * N_IMAGES)
    assert len(raw) == 3073 * N_IMAGES, path
    with open(path, "rb") as f:
        file_sha = hashlib.sha256(f.read()).hexdigest()
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(N_IMAGES, 3073)
    labels = rec[:, 0].astype(np.int32)
    pix = rec[:, 1:].reshape(N_IMAGES, 3, 32, 32).astype(np.float32)
    mean = np.array(CIFAR_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array(CIFAR_STD, dtype=np.float32).reshape(1, 3, 1, 1)
    x = (pix / np.float32(255.0) - mean) / std
    assert x.dtype == np.float32
    return x, labels, file_sha


# --------------------------------------------------------------------------
# Reference step
# --------------------------------------------------------------------------
def run_mode(widths, blocks, params, bn, momentum, x, labels, mode, flips=None):
    global RELU_FLIPS, RELU_CALLS
    RELU_FLIPS, RELU_CALLS = flips, 0
    model = ResNet(widths, blocks)
    load_state(model, params, bn)
    model = model.double()
    model.train(mode == "train")
    xd = torch.from_numpy(x).double()
    yd = torch.from_numpy(labels).long()
    global RELU_LOG
    RELU_LOG = []
    logits = model(xd)
    pre_relu, RELU_LOG = RELU_LOG, None
    loss = nn.CrossEntropyLoss()(logits, yd)
    loss.backward()
    RELU_FLIPS = None

    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True,
                          weight_decay=WEIGHT_DECAY, dampening=0, foreach=False)
    names = [n for n, _ in model.named_parameters()]
    for name, t in model.named_parameters():
        opt.state[t]["momentum_buffer"] = torch.from_numpy(momentum[name]).double().clone()
    p_before = {n: t.detach().clone() for n, t in model.named_parameters()}
    grads = {n: t.grad.detach().clone() for n, t in model.named_parameters()}
    opt.step()

    res = {"logits": logits.detach().numpy(), "loss": np.array([loss.item()]),
           "grad": {}, "param": {}, "momentum": {}, "running": {},
           "relu_min_abs": [float(t.abs().min()) for t in pre_relu],
           "relu_near_zero": [int((t.abs() < NEAR_ZERO).sum()) for t in pre_relu],
           "ambiguous": [(c, int(i)) for c, t in enumerate(pre_relu)
                         for i in torch.nonzero(t.reshape(-1).abs() < AMBIGUOUS).reshape(-1)]}
    for name, t in model.named_parameters():
        buf = opt.state[t]["momentum_buffer"]
        # Independent check of PyTorch's Nesterov SGD update.
        g = grads[name] + WEIGHT_DECAY * p_before[name]
        want_buf = MOMENTUM * torch.from_numpy(momentum[name]).double() + g
        want_p = p_before[name] - LR * (g + MOMENTUM * want_buf)
        assert torch.allclose(buf, want_buf, rtol=1e-12, atol=1e-15), name
        assert torch.allclose(t.detach(), want_p, rtol=1e-12, atol=1e-15), name
        res["grad"][name] = grads[name].numpy()
        res["param"][name] = t.detach().numpy()
        res["momentum"][name] = buf.numpy()
    for mod_name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            res["running"][mod_name] = (m.running_mean.numpy().copy(),
                                        m.running_var.numpy().copy())
            if mode == "eval":
                assert np.array_equal(m.running_mean.numpy(),
                                      bn[mod_name]["running_mean"].astype(np.float64))
    return names, res


def sampled_rel_error(a, b):
    a, b = sample(a).astype(np.float64), sample(b).astype(np.float64)
    norm = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / norm) if norm > 0 else float(np.linalg.norm(a - b))


def flip_bounds(widths, blocks, params, bn, momentum, x, labels, mode, names, base):
    """Per parameter and kind (grad, param, momentum): the sum over ambiguous
    ReLU inputs of the relative change that flipping each one alone causes,
    in the C test's sampled metric. The C side may differ from the reference
    by up to this much more than its base tolerance."""
    bounds = {kind: np.zeros(len(names)) for kind in ("grad", "param", "momentum")}
    for call, idx in base["ambiguous"]:
        _, res = run_mode(widths, blocks, params, bn, momentum, x, labels, mode, {call: [idx]})
        for kind, arr in bounds.items():
            for k, name in enumerate(names):
                arr[k] += sampled_rel_error(res[kind][name], base[kind][name])
    return {kind: arr.astype(np.float32) for kind, arr in bounds.items()}


def make_model_fixture(key, x, labels, out_dir):
    widths, blocks, want_count = MODELS[key]
    model = ResNet(widths, blocks)
    count = sum(t.numel() for t in model.parameters())
    assert count == want_count, (key, count, want_count)

    # torchsummary on the float32 model (shapes only; values do not matter).
    from torchsummary import summary
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        summary(model, (3, 32, 32), device="cpu")
    with open(os.path.join(out_dir, f"summary_{key}.txt"), "w", encoding="utf-8",
              newline="\n") as f:
        f.write(buf.getvalue())

    params, bn, momentum, init_names = initial_state(model)
    tensors = []
    for mod_name, st in bn.items():
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            tensors.append((f"state.{mod_name}.{leaf}", st[leaf]))
    for name in init_names:
        tensors.append((f"init.{name}", sample(params[name])))

    names, losses, diag = None, {}, {}
    for mode in ("train", "eval"):
        names, res = run_mode(widths, blocks, params, bn, momentum, x, labels, mode)
        losses[mode] = float(res["loss"][0])
        diag[f"{mode}.relu_min_abs"] = json.dumps(["%.3e" % v for v in res["relu_min_abs"]])
        diag[f"{mode}.relu_near_zero"] = json.dumps(res["relu_near_zero"])
        bounds = flip_bounds(widths, blocks, params, bn, momentum, x, labels, mode, names, res)
        for kind, arr in bounds.items():
            tensors.append((f"{mode}.flip_bound.{kind}", arr))
        diag[f"{mode}.ambiguous_relu_inputs"] = str(len(res["ambiguous"]))
        tensors.append((f"{mode}.logits", res["logits"]))
        tensors.append((f"{mode}.loss", res["loss"]))
        for name in names:
            tensors.append((f"{mode}.grad.{name}", sample(res["grad"][name])))
            tensors.append((f"{mode}.param.{name}", sample(res["param"][name])))
            tensors.append((f"{mode}.momentum.{name}", sample(res["momentum"][name])))
        if mode == "train":
            for mod_name, (rm, rv) in res["running"].items():
                tensors.append((f"train.running.{mod_name}.running_mean", rm))
                tensors.append((f"train.running.{mod_name}.running_var", rv))

    metadata = {"model": key, "widths": json.dumps(widths), "blocks": json.dumps(blocks),
                "seed": str(SEED), "lr": "0.1", "momentum": "0.9", "weight_decay": "0.0005",
                "nesterov": "1", "sample_cap": str(SAMPLE_CAP), "n_images": str(N_IMAGES),
                "parameter_names": json.dumps(names), **diag}
    path = os.path.join(out_dir, f"{key}.safetensors")
    write_safetensors(path, tensors, metadata)
    return path, names, losses, dict(tensors)


def main(argv=None):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(root, "..", "shared", "data",
                                                   "cifar-10-batches-bin"),
                    help="folder holding data_batch_1.bin")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)  # one reduction order, whatever the machine
    philox_self_test()

    out_dir = os.path.join(root, "tests", "golden", "fixtures")
    os.makedirs(out_dir, exist_ok=True)

    x, labels, file_sha = load_input(args.data)
    written = {}
    in_path = os.path.join(out_dir, "input.safetensors")
    write_safetensors(in_path, [("input", x), ("labels", labels)], {"source": "data_batch_1.bin",
                      "source_sha256": file_sha, "n_images": str(N_IMAGES)})
    written[in_path] = {"input": x, "labels": labels}

    for key in MODELS:
        path, names, losses, tensors = make_model_fixture(key, x, labels, out_dir)
        written[path] = tensors
        print(f"{key}: {len(names)} parameters, train loss {losses['train']:.9f}, "
              f"eval loss {losses['eval']:.9f}")

    # Self-check: read every file back with our own parser and compare.
    for path, tensors in written.items():
        meta, got = read_safetensors(path)
        assert list(got) == list(tensors), path
        for name, arr in tensors.items():
            arr = np.asarray(arr)
            want = arr if arr.dtype == np.int32 else arr.astype(np.float32)
            assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
            assert np.array_equal(got[name], want), name

    total = 0
    for fn in sorted(os.listdir(out_dir)):
        size = os.path.getsize(os.path.join(out_dir, fn))
        total += size
        print(f"  {fn:28s} {size:10d} bytes")
    print(f"total fixture size: {total} bytes ({total / 2**20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

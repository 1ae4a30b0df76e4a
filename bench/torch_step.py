#!/usr/bin/env python3
"""PyTorch's CPU training step on the same models and data as cresnet_step_bench.

Forward, backward and SGD (lr 0.01, momentum 0.9, Nesterov, weight decay 5e-4)
on a different batch of real CIFAR-10 images every step, after warm-up; the
models are those of tests/golden/make_golden.py. Prints one line in the same
form as cresnet_step_bench, with the peak RSS of the process.

usage: torch_step.py DATA_DIR small|medium|large [batch] [steps] [warmup]
Threads: torch.set_num_threads($OMP_NUM_THREADS or 2).
"""
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden"))
from make_golden import CIFAR_MEAN, CIFAR_STD, MODELS, ResNet  # noqa: E402


def load_train(data_dir):
    records = [np.fromfile(os.path.join(data_dir, f"data_batch_{i}.bin"), dtype=np.uint8).reshape(-1, 3073)
               for i in range(1, 6)]
    records = np.concatenate(records)
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    x = records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    mean = np.array(CIFAR_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.array(CIFAR_STD, np.float32).reshape(1, 3, 1, 1)
    return torch.from_numpy((x - mean) / std), labels


def main():
    data_dir, arch = sys.argv[1], sys.argv[2]
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    warmup = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    torch.manual_seed(0)
    images, labels = load_train(data_dir)
    widths, blocks, _ = MODELS[arch]
    model = ResNet(widths, blocks).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        idx = torch.arange(step * batch, (step + 1) * batch) % images.shape[0]
        loss = loss_fn(model(images[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"model={arch} batch={batch} threads={torch.get_num_threads()} steps={steps} "
          f"images_per_s={steps * batch / seconds:.1f} ms_per_step={1e3 * seconds / steps:.2f} "
          f"peak_rss_mb={rss_mb:.0f} last_loss={loss.item():.4f} torch={torch.__version__}")


if __name__ == "__main__":
    main()

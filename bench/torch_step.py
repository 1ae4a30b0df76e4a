#!/usr/bin/env python3
"""PyTorch's training step on the same models and data as cresnet_step_bench
(CPU) and `cresnet bench` (GPU).

Forward, backward and SGD (lr 0.01, momentum 0.9, Nesterov, weight decay 5e-4)
on a different batch of real CIFAR-10 images every step, after warm-up; the
models are those of tests/golden/make_golden.py. Prints one line in the same
form as cresnet_step_bench, with the peak RSS of the process.

usage: torch_step.py [--device cpu|cuda] [--precision fp32|tf32|bf16] [--no-channels-last]
                     DATA_DIR small|medium|large [batch] [steps] [warmup]
Threads: torch.set_num_threads($OMP_NUM_THREADS or 2).
--device cuda: the images live on the GPU, the model in channels_last
(NHWC, as cresnet's activations) unless --no-channels-last, cuDNN
autotuning on (torch.backends.cudnn.benchmark), timed between
torch.cuda.synchronize() calls. --precision fp32 (default) turns TF32 off
for convolutions and matrix products, as cresnet's fp32; tf32 is PyTorch's
own default for cuDNN convolutions; bf16 runs the forward pass and the loss
under torch.autocast to bfloat16 (fp32 weights and optimizer, as cresnet's
bf16). Peak GPU memory is printed too.
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


def options(argv):
    """Splits --device/--precision/--no-channels-last from the positional words."""
    opts = {"device": "cpu", "precision": "fp32", "channels_last": True}
    rest = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--device", "--precision") and i + 1 < len(argv):
            opts[a[2:]] = argv[i + 1]
            i += 2
            continue
        if a == "--no-channels-last":
            opts["channels_last"] = False
        elif a.startswith("--"):
            sys.exit(f"torch_step.py: unknown option {a}")
        else:
            rest.append(a)
        i += 1
    if len(rest) < 2 or opts["device"] not in ("cpu", "cuda") or opts["precision"] not in ("fp32", "tf32", "bf16"):
        sys.exit(__doc__)
    return opts, rest


def main():
    opts, args = options(sys.argv[1:])
    data_dir, arch = args[0], args[1]
    batch = int(args[2]) if len(args) > 2 else 128
    steps = int(args[3]) if len(args) > 3 else 20
    warmup = int(args[4]) if len(args) > 4 else 3
    cuda = opts["device"] == "cuda"
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    torch.manual_seed(0)
    images, labels = load_train(data_dir)
    widths, blocks, _ = MODELS[arch]
    model = ResNet(widths, blocks).train()
    fmt = torch.channels_last if cuda and opts["channels_last"] else torch.contiguous_format
    if cuda:
        tf32 = opts["precision"] == "tf32"
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True
        # Device memory before anything of ours, context included: the end
        # minus this is what cresnet's bench reports (cudaMemGetInfo).
        torch.cuda.init()
        free_at_start = torch.cuda.mem_get_info()[0]
        model = model.to("cuda", memory_format=fmt)
        images = images.to("cuda").contiguous(memory_format=fmt)
        labels = labels.to("cuda")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    start = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            sync()
            start = time.perf_counter()
        idx = torch.arange(step * batch, (step + 1) * batch, device=images.device) % images.shape[0]
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16,
                            enabled=opts["precision"] == "bf16"):
            loss = loss_fn(model(images[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    device = ""
    if cuda:
        used_mb = (free_at_start - torch.cuda.mem_get_info()[0]) / 2**20
        device = (f" device=cuda gpu_mem_mb={torch.cuda.max_memory_allocated() / 2**20:.0f} "
                  f"gpu_used_mb={used_mb:.0f} "
                  f"precision={opts['precision']} channels_last={int(fmt == torch.channels_last)}")
    print(f"model={arch} batch={batch} threads={torch.get_num_threads()} steps={steps} "
          f"images_per_s={steps * batch / seconds:.1f} ms_per_step={1e3 * seconds / steps:.2f} "
          f"peak_rss_mb={rss_mb:.0f} last_loss={loss.item():.4f} torch={torch.__version__}{device}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The report's training recipe in PyTorch, for comparison with `cresnet train`.

Trains the model of a cresnet config (model.arch: small, medium or large, as
defined in tests/golden/make_golden.py) on the CIFAR-10 binary files with the
config's recipe: SGD (lr, momentum, Nesterov, weight decay), CyclicLR stepped
once per batch (base_lr, max_lr, step_size_up/down, mode, gamma, momentum
cycling between base_momentum and max_momentum), train.epochs epochs of
train.batch_size, and the torchvision augmentation on PIL images
RandomCrop(32, padding) -> RandomHorizontalFlip -> RandomRotation(deg) ->
ToTensor -> Normalize(mean, std); test images are only normalised. The test
set is evaluated after every epoch.

usage: torch_train.py CONFIG DATA_DIR OUT_DIR [--epochs N] [--threads T]
                      [--train-limit N] [--workers W] [--device cpu|cuda]

DATA_DIR holds data_batch_1.bin .. data_batch_5.bin and test_batch.bin
(3073-byte records: label, 1024 R, 1024 G, 1024 B). --train-limit N trains on
the first N training images (0 = all; default: the config's data.train_limit).
--workers W: DataLoader worker processes for the augmentation (default 1; 0 =
in the main process). --device cuda trains on the GPU (fp32, TF32 off, as
cresnet's fp32); the augmentation stays on the CPU, in the loader workers.

Writes OUT_DIR/metrics.jsonl, one line per epoch in cresnet's format:
  {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr",
   "images_per_s", "seconds"}
and OUT_DIR/confusion_test.csv (the test set after the last epoch, as cresnet's);
where train_loss/train_acc are over the epoch's samples as the model trained,
lr is the rate of the epoch's last step, and seconds/images_per_s cover the
training part of the epoch (not the evaluation), as in cresnet; and
OUT_DIR/summary.txt (versions, device, threads, final and best accuracy, wall time).
After every epoch OUT_DIR/checkpoint.pt holds the model, optimizer, scheduler
and RNG state; --resume continues from it (exactly, with --workers 0, where
all randomness comes from the global generator saved there), appending to
metrics.jsonl, so a long run survives being stopped.
Seeded with torch.manual_seed(0); threads torch.set_num_threads(T), default 2.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import yaml
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden"))
from make_golden import MODELS, ResNet  # noqa: E402


def fail(msg):
    sys.exit(f"torch_train.py: {msg}")


def get(cfg, dotted, default=None):
    node = cfg
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            if default is None:
                fail(f"config has no {dotted}")
            return default
        node = node[key]
    return node


def num(cfg, dotted, default=None):
    # PyYAML reads 1e-6 / 5e-4 (no dot) as strings, so convert explicitly.
    value = get(cfg, dotted, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        fail(f"{dotted}: not a number: {value!r}")


def flag(cfg, dotted, default=None):
    value = get(cfg, dotted, default)
    if not isinstance(value, bool):
        fail(f"{dotted}: not true/false: {value!r}")
    return value


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def load_records(path):
    if not os.path.isfile(path):
        fail(f"missing {path}")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 3073:
        fail(f"{path}: size {raw.size} is not a multiple of 3073")
    rec = raw.reshape(-1, 3073)
    labels = rec[:, 0].astype(np.int64)
    images = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()  # NHWC uint8
    return images, labels


class AugmentedCifar(torch.utils.data.Dataset):
    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def evaluate(model, images, labels, batch=1000):
    """Test loss, accuracy and the 10x10 confusion matrix (rows true, columns predicted)."""
    model.eval()
    loss_sum, correct = 0.0, 0
    confusion = torch.zeros(10, 10, dtype=torch.int64, device=images.device)
    with torch.no_grad():
        for s in range(0, len(labels), batch):
            x, y = images[s:s + batch], labels[s:s + batch]
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            predicted = logits.argmax(1)
            correct += (predicted == y).sum().item()
            confusion += torch.bincount(y * 10 + predicted, minlength=100).view(10, 10)
    model.train()
    return loss_sum / len(labels), correct / len(labels), confusion.cpu()


def write_confusion(path, confusion):
    """The same CSV as cresnet's confusion_test.csv."""
    with open(path, "w") as f:
        f.write("true\\predicted," + ",".join(CLASSES) + "\n")
        for name, row in zip(CLASSES, confusion.tolist()):
            f.write(name + "," + ",".join(str(v) for v in row) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("data_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--epochs", type=int, default=None, help="default: train.epochs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-limit", type=int, default=None,
                    help="first N training images, 0 = all (default: data.train_limit)")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers, 0 = main process")
    ap.add_argument("--resume", action="store_true", help="continue from OUT_DIR/checkpoint.pt")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()

    with open(args.config) as f:
        cfg = yaml.safe_load(f)
    if not isinstance(cfg, dict):
        fail(f"{args.config}: not a YAML mapping")

    arch = get(cfg, "model.arch")
    if arch not in MODELS:
        fail(f"model.arch {arch!r}: expected one of {', '.join(MODELS)}")
    schedule = get(cfg, "schedule.name")
    if schedule != "cyclic":
        fail(f"schedule.name is {schedule!r}; only 'cyclic' (CyclicLR, the report's recipe) is implemented")
    if get(cfg, "optimizer.name", "sgd") != "sgd":
        fail(f"optimizer.name {get(cfg, 'optimizer.name')!r}: only sgd is implemented")
    epochs = args.epochs if args.epochs is not None else int(get(cfg, "train.epochs"))
    batch = int(get(cfg, "train.batch_size"))
    limit = args.train_limit if args.train_limit is not None else int(get(cfg, "data.train_limit", 0))
    mean = [float(v) for v in get(cfg, "data.mean")]
    std = [float(v) for v in get(cfg, "data.std")]
    pad = int(get(cfg, "data.augment.crop_padding", 0))
    hflip = flag(cfg, "data.augment.hflip", False)
    rotate = num(cfg, "data.augment.rotate_deg", 0)
    mode = get(cfg, "schedule.mode", "triangular")
    step_down = int(get(cfg, "schedule.step_size_down", 0))
    if epochs < 1 or batch < 1 or limit < 0 or args.threads < 1 or args.workers < 0:
        fail("epochs, batch size and threads must be >= 1, train limit and workers >= 0")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            fail("--device cuda: no GPU is visible")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True

    train_x, train_y = zip(*(load_records(os.path.join(args.data_dir, f"data_batch_{i}.bin"))
                             for i in range(1, 6)))
    train_x, train_y = np.concatenate(train_x), np.concatenate(train_y)
    if limit:
        train_x, train_y = train_x[:limit], train_y[:limit]
    test_x, test_y = load_records(os.path.join(args.data_dir, "test_batch.bin"))
    # ToTensor + Normalize, once: float32 x / 255, then (x - mean) / std per channel.
    t = torch.from_numpy(test_x).permute(0, 3, 1, 2).float().div(255)
    test_images = ((t - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)).contiguous()
    test_labels = torch.from_numpy(test_y)
    test_images, test_labels = test_images.to(device), test_labels.to(device)

    aug = []
    if pad > 0:
        aug.append(transforms.RandomCrop(32, padding=pad))
    if hflip:
        aug.append(transforms.RandomHorizontalFlip())
    if rotate != 0:
        aug.append(transforms.RandomRotation(rotate))
    transform = transforms.Compose(aug + [transforms.ToTensor(), transforms.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(
        AugmentedCifar(train_x, train_y, transform), batch_size=batch, shuffle=True,
        num_workers=args.workers, persistent_workers=args.workers > 0, drop_last=False,
        pin_memory=args.device == "cuda")

    widths, blocks, _ = MODELS[arch]
    model = ResNet(widths, blocks).train().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=num(cfg, "optimizer.lr"),
                                momentum=num(cfg, "optimizer.momentum"),
                                nesterov=flag(cfg, "optimizer.nesterov"),
                                weight_decay=num(cfg, "optimizer.weight_decay"))
    scheduler = torch.optim.lr_scheduler.CyclicLR(
        optimizer, base_lr=num(cfg, "schedule.base_lr"), max_lr=num(cfg, "schedule.max_lr"),
        step_size_up=int(get(cfg, "schedule.step_size_up")),
        step_size_down=step_down if step_down > 0 else None, mode=mode,
        gamma=num(cfg, "schedule.gamma", 1.0), cycle_momentum=flag(cfg, "schedule.cycle_momentum"),
        base_momentum=num(cfg, "schedule.base_momentum", 0.8),
        max_momentum=num(cfg, "schedule.max_momentum", 0.9))

    os.makedirs(args.out_dir, exist_ok=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, {args.threads} threads, {args.workers} loader workers; "
          f"model {arch} ({n_params} parameters), {len(train_y)} training images, "
          f"batch {batch}, {epochs} epochs", flush=True)
    wall_start = time.perf_counter()
    best, rec, first_epoch = 0.0, None, 1
    checkpoint_path = os.path.join(args.out_dir, "checkpoint.pt")
    if args.resume and os.path.exists(checkpoint_path):
        state = torch.load(checkpoint_path, weights_only=False, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"].cpu())
        best, rec, first_epoch = state["best"], state["rec"], state["epoch"] + 1
        print(f"resumed after epoch {state['epoch']}", flush=True)
    with open(os.path.join(args.out_dir, "metrics.jsonl"), "a" if first_epoch > 1 else "w") as metrics:
        for epoch in range(first_epoch, epochs + 1):
            start = time.perf_counter()
            loss_sum, correct, count, lr = 0.0, 0, 0, 0.0
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                lr = optimizer.param_groups[0]["lr"]
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                n = y.shape[0]
                loss_sum += loss.item() * n
                correct += (logits.detach().argmax(1) == y).sum().item()
                count += n
            seconds = time.perf_counter() - start
            test_loss, test_acc, confusion = evaluate(model, test_images, test_labels)
            write_confusion(os.path.join(args.out_dir, "confusion_test.csv"), confusion)
            best = max(best, test_acc)
            rec = {"epoch": epoch, "train_loss": loss_sum / count, "train_acc": correct / count,
                   "test_loss": test_loss, "test_acc": test_acc, "lr": lr,
                   "images_per_s": count / seconds, "seconds": seconds}
            metrics.write(
                f'{{"epoch": {epoch}, "train_loss": {rec["train_loss"]:.6f}, '
                f'"train_acc": {rec["train_acc"]:.6f}, "test_loss": {test_loss:.6f}, '
                f'"test_acc": {test_acc:.6f}, "lr": {lr:.9g}, '
                f'"images_per_s": {rec["images_per_s"]:.1f}, "seconds": {seconds:.3f}}}\n')
            metrics.flush()
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                     "epoch": epoch, "best": best, "rec": rec}
            torch.save(state, checkpoint_path + ".tmp")
            os.replace(checkpoint_path + ".tmp", checkpoint_path)
            print(f"epoch {epoch}: train loss {rec['train_loss']:.4f} acc {100 * rec['train_acc']:.2f}% | "
                  f"test loss {test_loss:.4f} acc {100 * test_acc:.2f}% | "
                  f"{rec['images_per_s']:.0f} img/s, {seconds:.1f} s", flush=True)
    wall = time.perf_counter() - wall_start

    with open(os.path.join(args.out_dir, "summary.txt"), "w") as f:
        f.write(f"implementation: torch {torch.__version__}, torchvision {torchvision.__version__}\n")
        if args.device == "cuda":
            f.write(f"device: {torch.cuda.get_device_name()} (cuda, fp32, TF32 off)\n")
        else:
            f.write(f"device: {cpu_model()}, {torch.get_num_threads()} threads (cpu)\n")
        f.write(f"config: {args.config}\n")
        f.write(f"model: {arch} ({n_params} trainable parameters)\n")
        f.write(f"epochs: {epochs}, batch {batch}, {len(train_y)} training images\n")
        f.write(f"threads: {torch.get_num_threads()}, loader workers {args.workers}\n")
        f.write(f"final train loss {rec['train_loss']:.4f}, train accuracy {100 * rec['train_acc']:.2f}%\n")
        f.write(f"final test loss {rec['test_loss']:.4f}, test accuracy {100 * rec['test_acc']:.2f}% "
                f"(best {100 * best:.2f}%)\n")
        f.write(f"wall time {wall:.1f} s (training and evaluation), last epoch {rec['images_per_s']:.0f} images/s\n")


if __name__ == "__main__":
    main()

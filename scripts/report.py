#!/usr/bin/env python3
"""The report's figures and Table 1, regenerated from training runs.

usage: report.py [-o OUT_DIR] RUN_DIR...

Each RUN_DIR is a run directory of `cresnet train` (log.dir) or of
bench/torch_train.py: metrics.jsonl (one record per epoch), summary.txt and
confusion_test.csv. Writes into OUT_DIR (default: report/):

  train_loss.png, train_accuracy.png, test_loss.png, test_accuracy.png
      one line per run against the epoch (the report's Figures 5-8);
  confusion_<run>.png
      the test-set confusion matrix of each run, counts in the cells, class
      names on the axes (Figures 2-4);
  table1.md
      Table 1: model, trainable parameters, implementation, device, epochs,
      final train accuracy, final test accuracy, best test accuracy, training
      time.

A run is named by its directory. Per-step records (log.every_steps) are
skipped and an epoch recorded twice (a resumed run) counts once, with its last
record. Training time is the sum of the epochs' "seconds" (training, without
the per-epoch evaluation, in both implementations), so it covers every part of
a resumed run. Needs matplotlib (scripts/pyenv.sh installs it).
"""
import argparse
import json
import os
import re
import sys

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MODEL_NAMES = {"small": "ResNetSmall", "medium": "ResNetMedium", "large": "ResNetLarge"}
CURVES = [("train_loss", "training loss"), ("train_acc", "training accuracy"),
          ("test_loss", "test loss"), ("test_acc", "test accuracy")]
CURVE_FILES = {"train_loss": "train_loss.png", "train_acc": "train_accuracy.png",
               "test_loss": "test_loss.png", "test_acc": "test_accuracy.png"}


def fail(msg):
    sys.exit(f"report.py: {msg}")


def read_epochs(path):
    epochs = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                fail(f"{path}:{n}: {e}")
            if "test_acc" in rec and "epoch" in rec:
                epochs[int(rec["epoch"])] = rec
    if not epochs:
        fail(f"{path}: no epoch records")
    return [epochs[k] for k in sorted(epochs)]


def read_summary(path):
    """model, parameters, implementation and device from summary.txt."""
    info = {"model": "?", "params": None, "implementation": "?", "device": "?"}
    if not os.path.isfile(path):
        return info
    with open(path) as f:
        for line in f:
            m = re.match(r"model: (\S+) \((\d+) trainable parameters\)", line)
            if m:
                info["model"], info["params"] = m.group(1), int(m.group(2))
            m = re.match(r"implementation: (.*)", line)
            if m:
                info["implementation"] = m.group(1).strip()
            m = re.match(r"device: (.*)", line)
            if m:
                info["device"] = m.group(1).strip()
            # Summaries of cresnet before 0.1 named only the backend.
            m = re.match(r"epochs: .* backend (\S+),", line)
            if m and info["implementation"] == "?":
                info["implementation"], info["device"] = "cresnet", f"{m.group(1)} backend"
            # ... and bench/torch_train.py's only its threads.
            m = re.match(r"threads: (\d+),", line)
            if m and info["device"] == "?":
                info["device"] = f"cpu, {m.group(1)} threads"
    return info


def read_confusion(path):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        rows = [line.rstrip("\n").split(",") for line in f if line.strip()]
    if [c for c in rows[0][1:]] != CLASSES or [r[0] for r in rows[1:]] != CLASSES:
        fail(f"{path}: expected a 10x10 matrix with the CIFAR-10 class names")
    return [[int(v) for v in r[1:]] for r in rows[1:]]


def read_run(run_dir):
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(metrics):
        fail(f"no {metrics}")
    run = read_summary(os.path.join(run_dir, "summary.txt"))
    run["name"] = os.path.basename(os.path.normpath(run_dir))
    run["epochs"] = read_epochs(metrics)
    run["confusion"] = read_confusion(os.path.join(run_dir, "confusion_test.csv"))
    return run


def duration(seconds):
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def table1(runs):
    head = ["model", "trainable params", "implementation", "device", "epochs", "final train acc",
            "final test acc", "best test acc", "training time"]
    right = [False, True, False, False, True, True, True, True, True]
    rows = []
    for run in runs:
        last = run["epochs"][-1]
        rows.append([MODEL_NAMES.get(run["model"], run["model"]),
                     f"{run['params']:,}" if run["params"] is not None else "?",
                     run["implementation"], run["device"], str(last["epoch"]),
                     f"{100 * last['train_acc']:.2f}%", f"{100 * last['test_acc']:.2f}%",
                     f"{100 * max(r['test_acc'] for r in run['epochs']):.2f}%",
                     duration(sum(r["seconds"] for r in run["epochs"]))])
    lines = ["| " + " | ".join(head) + " |",
             "| " + " | ".join("---:" if r else "---" for r in right) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_curves(plt, runs, out_dir):
    for key, title in CURVES:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for run in runs:
            epochs = [r["epoch"] for r in run["epochs"]]
            values = [r[key] * (100 if key.endswith("acc") else 1) for r in run["epochs"]]
            ax.plot(epochs, values, marker="o", markersize=2, label=run["name"])
        ax.set_xlabel("epoch")
        ax.set_ylabel(title + (" (%)" if key.endswith("acc") else ""))
        ax.set_title(title.capitalize())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, CURVE_FILES[key]))
        plt.close(fig)


def plot_confusion(plt, run, out_dir):
    matrix = run["confusion"]
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=120)
    image = ax.imshow(matrix, cmap="Blues")
    top = max(max(row) for row in matrix) or 1
    for i in range(10):
        for j in range(10):
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=7,
                    color="white" if matrix[i][j] > top / 2 else "black")
    ax.set_xticks(range(10), CLASSES, rotation=45, ha="right")
    ax.set_yticks(range(10), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    correct = sum(matrix[i][i] for i in range(10))
    ax.set_title(f"{run['name']}: test set, {100 * correct / sum(map(sum, matrix)):.2f}% correct")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, f"confusion_{run['name']}.png"))
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", default="report", help="output directory (default: report/)")
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR")
    args = ap.parse_args()
    runs = [read_run(d) for d in args.runs]
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        fail("two runs have the same directory name: " + ", ".join(names))

    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    os.makedirs(args.out, exist_ok=True)
    plot_curves(plt, runs, args.out)
    for run in runs:
        if run["confusion"] is None:
            print(f"report.py: {run['name']}: no confusion_test.csv, no heatmap", file=sys.stderr)
        else:
            plot_confusion(plt, run, args.out)
    with open(os.path.join(args.out, "table1.md"), "w") as f:
        f.write(table1(runs))
    print(f"report.py: {len(runs)} runs -> {args.out}/")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Markdown table of training runs, in the form of the report's Table 1.

usage: results_table.py RUN_DIR...

Each RUN_DIR is a run directory of `cresnet train` (log.dir) or of
bench/torch_train.py, holding metrics.jsonl. One row per run:

  model | implementation | epochs | final train accuracy | final test accuracy |
  best test accuracy | wall time

The run's label is its directory name: a name <implementation>_<model> (as
bench/results.sh writes, e.g. cresnet_small, torch_medium) gives both columns;
otherwise the model comes from the "model:" line of summary.txt, if any, and
the whole name is the implementation. Epochs is the last epoch recorded; the
accuracies are those of the last epoch and the best test accuracy of any
epoch; wall time is the sum of the epochs' "seconds" (training time, without
the per-epoch evaluation, in both implementations). Per-step lines
(cresnet's log.every_steps) are skipped; an epoch recorded twice (a resumed
run) counts once, with its last record. Standard library only.
"""
import json
import os
import re
import sys

KNOWN_MODELS = ("small", "medium", "large", "custom")


def read_epochs(path):
    epochs = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"results_table.py: {path}:{n}: {e}")
            if "test_acc" in rec and "epoch" in rec:
                epochs[int(rec["epoch"])] = rec
    return [epochs[k] for k in sorted(epochs)]


def summary_model(run_dir):
    try:
        with open(os.path.join(run_dir, "summary.txt")) as f:
            for line in f:
                m = re.match(r"model:\s*(\S+)", line)
                if m:
                    return m.group(1)
    except OSError:
        pass
    return None


def label(run_dir):
    name = os.path.basename(os.path.normpath(run_dir))
    impl, sep, model = name.rpartition("_")
    if sep and impl and model in KNOWN_MODELS:
        return model, impl
    return summary_model(run_dir) or "?", name


def hms(seconds):
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    rows = []
    for run_dir in argv:
        path = os.path.join(run_dir, "metrics.jsonl")
        if not os.path.isfile(path):
            sys.exit(f"results_table.py: no {path}")
        recs = read_epochs(path)
        if not recs:
            sys.exit(f"results_table.py: {path}: no epoch records")
        model, impl = label(run_dir)
        last = recs[-1]
        best = max(r["test_acc"] for r in recs)
        wall = sum(r["seconds"] for r in recs)
        rows.append([model, impl, str(last["epoch"]), f"{100 * last['train_acc']:.2f}%",
                     f"{100 * last['test_acc']:.2f}%", f"{100 * best:.2f}%", hms(wall)])
    head = ["model", "implementation", "epochs", "final train accuracy", "final test accuracy",
            "best test accuracy", "wall time"]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    right = [False, False, True, True, True, True, True]

    def fmt(cells):
        return "| " + " | ".join(c.rjust(w) if r else c.ljust(w)
                                 for c, w, r in zip(cells, widths, right)) + " |"

    print(fmt(head))
    print("| " + " | ".join("-" * (w - 1) + ":" if r else "-" * w
                            for w, r in zip(widths, right)) + " |")
    for r in rows:
        print(fmt(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

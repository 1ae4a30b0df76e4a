#!/usr/bin/env python3
"""Checks a run's TensorBoard events, timeline and report against its metrics.

usage: check_reports.py events RUN_DIR
       check_reports.py timeline FILE STEPS EPOCHS
       check_reports.py table REPORT_DIR RUN_DIR...

events: the real tensorboard package reads RUN_DIR's event file; every epoch
record of metrics.jsonl must appear as scalars (train/loss, train/accuracy,
test/loss, test/accuracy, lr, momentum, images_per_s at step = epoch) and
every per-step record as train/step_loss (step = global step), equal to the
printed value within its printed precision; and a copy with one flipped byte
must lose records (so the CRCs are checked, hence right in the good file).
timeline: FILE is JSON, and holds STEPS complete events of every step phase
(data: one more per epoch, the call that finds the epoch over).
table: REPORT_DIR/table1.md has one row per run whose final train and test
accuracies equal the last epoch of the run's metrics.jsonl.
Prints one line per failure; exit status 1 if any.
"""
import glob
import json
import os
import shutil
import sys
import tempfile

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)


def records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def close(a, b, printed_decimals):
    # metrics.jsonl rounds to printed_decimals; TensorBoard holds float32.
    return abs(a - b) <= 0.5 * 10 ** -printed_decimals + 1e-7 * abs(b) + 1e-12


def check_events(run_dir):
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.backend.event_processing import event_file_loader as efl

    files = glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    check(len(files) == 1, f"{run_dir}: {len(files)} event files, expected 1")
    if not files:
        return
    acc = ea.EventAccumulator(run_dir, size_guidance={ea.SCALARS: 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    scalars = {t: {e.step: e.value for e in acc.Scalars(t)} for t in tags}
    fields = {"train/loss": ("train_loss", 6), "train/accuracy": ("train_acc", 6),
              "test/loss": ("test_loss", 6), "test/accuracy": ("test_acc", 6),
              "lr": ("lr", 9), "images_per_s": ("images_per_s", 1)}
    compared = 0
    for rec in records(run_dir):
        if "test_acc" in rec:
            for tag, (key, decimals) in fields.items():
                got = scalars.get(tag, {}).get(rec["epoch"])
                check(got is not None and close(got, rec[key], decimals),
                      f"{tag} epoch {rec['epoch']}: tensorboard {got}, metrics {rec[key]}")
                compared += 1
            check(rec["epoch"] in scalars.get("momentum", {}), f"momentum epoch {rec['epoch']}")
        elif "step" in rec:
            got = scalars.get("train/step_loss", {}).get(rec["step"])
            check(got is not None and close(got, rec["loss"], 6),
                  f"train/step_loss step {rec['step']}: tensorboard {got}, metrics {rec['loss']}")
            compared += 1
    check(compared > 0, "no scalars compared")
    print(f"events: {compared} scalars equal to metrics.jsonl")

    good = sum(1 for _ in efl.RawEventFileLoader(files[0]).Load())
    with tempfile.TemporaryDirectory() as tmp:
        bad = os.path.join(tmp, os.path.basename(files[0]))
        shutil.copy(files[0], bad)
        with open(bad, "r+b") as f:
            f.seek(os.path.getsize(bad) // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0x40]))
        damaged = sum(1 for _ in efl.RawEventFileLoader(bad).Load())
    check(damaged < good, f"a flipped byte went unnoticed ({damaged} of {good} records read)")


def check_timeline(path, steps, epochs):
    with open(path) as f:
        events = json.load(f)
    complete = [e for e in events if e.get("ph") == "X"]
    # A step replayed as a graph (device.graphs on a GPU) has one 'graph'
    # event in place of forward, backward, comm wait and optimizer.
    graphs = sum(1 for e in complete if e["name"] == "graph")
    for phase in ("data", "forward", "backward", "comm wait", "optimizer"):
        n = sum(1 for e in complete if e["name"] == phase)
        want = steps + epochs if phase == "data" else steps - graphs
        check(n == want, f"timeline: {n} '{phase}' events, expected {want}")
    check(all(e["dur"] >= 0 and e["ts"] >= 0 for e in complete), "timeline: negative times")
    check(any(e["name"] == "evaluate" for e in complete), "timeline: no evaluate event")
    print(f"timeline: {len(complete)} events")


def check_table(report_dir, run_dirs):
    with open(os.path.join(report_dir, "table1.md")) as f:
        rows = [line.strip().strip("|").split("|") for line in f if line.startswith("|")]
    head, body = [c.strip() for c in rows[0]], rows[2:]
    check(len(body) == len(run_dirs), f"table1.md: {len(body)} rows for {len(run_dirs)} runs")
    for run_dir, row in zip(run_dirs, body):
        cells = dict(zip(head, (c.strip() for c in row)))
        last = [r for r in records(run_dir) if "test_acc" in r][-1]
        for col, key in (("final train acc", "train_acc"), ("final test acc", "test_acc")):
            want = f"{100 * last[key]:.2f}%"
            check(cells.get(col) == want, f"{run_dir}: {col} {cells.get(col)}, metrics say {want}")
        check(cells.get("epochs") == str(last["epoch"]), f"{run_dir}: epochs {cells.get('epochs')}")
    print(f"table1.md: {len(body)} rows checked")


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "events":
        check_events(args[0])
    elif what == "timeline":
        check_timeline(args[0], int(args[1]), int(args[2]))
    elif what == "table":
        check_table(args[0], args[1:])
    else:
        sys.exit(__doc__)
    sys.exit(1 if failures else 0)

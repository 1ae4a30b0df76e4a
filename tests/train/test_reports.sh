#!/usr/bin/env bash
# What researchers look at, end to end on two short real-data runs:
#  1. TensorBoard: the tensorboard package reads the events back and every
#     scalar equals metrics.jsonl (tests/train/check_reports.py events);
#  2. log.timeline: a valid Chrome trace with every phase of every step;
#  3. the end-of-epoch split of the step time is printed;
#  4. scripts/report.py makes every figure and a Table 1 whose rows equal
#     the runs' metrics.
# usage: test_reports.sh CRESNET REPO_ROOT DATA_DIR
set -u
cresnet=$1 root=$2 data=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/../check.sh"
python=$("$root/scripts/pyenv.sh") || { echo "FAIL: scripts/pyenv.sh"; exit 1; }
checker=$(dirname "$0")/check_reports.py
cfg=$root/configs/resnet_small.yaml
# 4 steps of 64 per epoch, 2 epochs.
common=(-o data.dir="$data" -o data.train_limit=256 -o train.batch_size=64 -o train.epochs=2
        -o log.every_steps=3 -o log.progress=lines)

"$cresnet" train -c "$cfg" "${common[@]}" -o log.dir="$work/run_a" \
  -o log.timeline="$work/run_a/trace/timeline.json" >"$work/a.log" 2>&1 \
  && ok || { fail "run_a exited $?"; cat "$work/a.log"; }
"$cresnet" train -c "$cfg" "${common[@]}" -o log.dir="$work/run_b" -o model.arch=custom \
  -o model.widths=[8,16] -o model.blocks=[1,1] >"$work/b.log" 2>&1 \
  && ok || { fail "run_b exited $?"; cat "$work/b.log"; }

"$python" "$checker" events "$work/run_a" && ok || fail "tensorboard events of run_a"
"$python" "$checker" events "$work/run_b" && ok || fail "tensorboard events of run_b"
"$python" "$checker" timeline "$work/run_a/trace/timeline.json" 8 2 && ok || fail "timeline"
n=$(grep -cE '^  time per step [0-9.]+ ms: data [0-9.]+, forward [0-9.]+, backward [0-9.]+, comm wait [0-9.]+, optimizer [0-9.]+(, graph [0-9.]+)?$' "$work/a.log")
[ "$n" -eq 2 ] && ok || { fail "$n phase lines for 2 epochs"; cat "$work/a.log"; }

"$python" "$root/scripts/report.py" -o "$work/report" "$work/run_a" "$work/run_b" \
  && ok || fail "report.py exited $?"
for f in train_loss.png train_accuracy.png test_loss.png test_accuracy.png confusion_run_a.png \
  confusion_run_b.png table1.md; do
  [ -s "$work/report/$f" ] && ok || fail "report: no $f"
done
for f in "$work"/report/*.png; do
  [ "$(head -c 8 "$f" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] && ok || fail "$f: not a PNG"
done
"$python" "$checker" table "$work/report" "$work/run_a" "$work/run_b" && ok || fail "table1.md"
cat "$work/report/table1.md"
finish

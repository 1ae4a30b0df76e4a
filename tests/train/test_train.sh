#!/usr/bin/env bash
# Training end to end on the real CIFAR-10, as a user runs it:
#  1. ResNetSmall, 2 epochs on the CPU, reaches >= 50% test accuracy, and
#     `cresnet eval` on its checkpoint reports the same accuracy. The recipe
#     is the report's with its cycle fitted to two epochs (up for 391 steps,
#     down for 391) and a peak lr of 0.05: the report's 2,000-step warm-up
#     alone is five epochs long;
#  1b. the same in bf16 (train.precision: bf16: bf16 activations and
#     convolutions, fp32 statistics, weights and optimizer) also reaches
#     >= 50%, where the processor has oneDNN's bf16 convolutions (a visible
#     SKIPPED line elsewhere);
#  2. resume is exact: 1 epoch, then resumed to 2, ends with bitwise the same
#     weights, momentum and statistics as 2 epochs straight (on a subset);
#     The same with the images resident in the backend and augmented there
#     (data.on_device: true) ends bitwise equal too;
#  3. preemption: SIGUSR1 mid-epoch writes a checkpoint and exits 75; the
#     resumed run ends bitwise equal to the straight one;
#  4. a damaged checkpoint is refused with exit 4 and a NaN loss stops the run
#     with exit 5, naming the step.
# usage: test_train.sh CRESNET REPO_ROOT DATA_DIR
set -u
cresnet=$1 root=$2 data=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/../check.sh"
cfg=$root/configs/resnet_small.yaml
common=(-o data.dir="$data" -o log.progress=lines)

# 1. Two epochs of the report's recipe.
"$cresnet" train -c "$cfg" "${common[@]}" -o train.epochs=2 -o schedule.step_size_up=391 \
  -o schedule.max_lr=0.05 -o log.dir="$work/full" >"$work/full.log" 2>&1 \
  && ok || { fail "train exited $?"; cat "$work/full.log"; }
acc=$(sed -n 's/.*"epoch": 2,.*"test_acc": \([0-9.]*\).*/\1/p' "$work/full/metrics.jsonl")
echo "2 epochs: test accuracy ${acc:-none}"
awk -v a="${acc:-0}" 'BEGIN { exit !(a >= 0.50) }' && ok || fail "test accuracy ${acc:-none} < 0.50"
for f in config.yaml metrics.jsonl confusion_test.csv summary.txt checkpoints/epoch_0002.safetensors; do
  [ -s "$work/full/$f" ] && ok || fail "missing $f"
done
eval_acc=$("$cresnet" eval -c "$cfg" "${common[@]}" --checkpoint "$work/full/checkpoints/epoch_0002.safetensors" \
  | sed -n 's/.*test accuracy \([0-9.]*\)%.*/\1/p')
want=$(awk -v a="${acc:-0}" 'BEGIN { printf "%.2f", 100 * a }')
[ "$eval_acc" = "$want" ] && ok || fail "eval accuracy $eval_acc% != training's $want%"

# 1b. The same in bf16.
"$cresnet" train -c "$cfg" "${common[@]}" -o train.epochs=2 -o schedule.step_size_up=391 \
  -o schedule.max_lr=0.05 -o train.precision=bf16 -o log.dir="$work/bf16" >"$work/bf16.log" 2>&1
rc=$?
if [ $rc = 2 ] && grep -q "bf16 on the CPU needs oneDNN's bf16 convolutions" "$work/bf16.log"; then
  echo "SKIPPED: bf16 training (this processor has no bf16 convolutions)"
else
  [ $rc = 0 ] && ok || { fail "bf16 train exited $rc"; cat "$work/bf16.log"; }
  acc16=$(sed -n 's/.*"epoch": 2,.*"test_acc": \([0-9.]*\).*/\1/p' "$work/bf16/metrics.jsonl")
  echo "2 epochs in bf16: test accuracy ${acc16:-none}"
  awk -v a="${acc16:-0}" 'BEGIN { exit !(a >= 0.50) }' && ok || fail "bf16 test accuracy ${acc16:-none} < 0.50"
fi

# 2. Resume exactness on a subset.
subset=("${common[@]}" -o data.train_limit=1024 -o train.batch_size=64)
"$cresnet" train -c "$cfg" "${subset[@]}" -o train.epochs=2 -o log.dir="$work/straight" >/dev/null 2>&1 || fail "straight run"
"$cresnet" train -c "$cfg" "${subset[@]}" -o train.epochs=1 -o log.dir="$work/resumed" >/dev/null 2>&1 || fail "first half"
"$cresnet" train -c "$cfg" "${subset[@]}" -o train.epochs=2 -o log.dir="$work/resumed" >"$work/resume.log" 2>&1 || fail "second half"
grep -q "resumed from .*epoch_0001" "$work/resume.log" && ok || fail "second half did not resume"
python3 "$root/tests/train/compare_checkpoints.py" "$work/straight/checkpoints/epoch_0002.safetensors" \
  "$work/resumed/checkpoints/epoch_0002.safetensors" && ok || fail "resumed run differs from straight run"

# 2b. Images resident in the backend's memory and augmented there
#     (data.on_device, the GPU default) train bitwise as the host loader:
#     same weights, same test loss and accuracy.
"$cresnet" train -c "$cfg" "${subset[@]}" -o train.epochs=2 -o data.on_device=true \
  -o log.dir="$work/on_device" >/dev/null 2>&1 || fail "on_device run"
python3 "$root/tests/train/compare_checkpoints.py" "$work/straight/checkpoints/epoch_0002.safetensors" \
  "$work/on_device/checkpoints/epoch_0002.safetensors" && ok || fail "data.on_device run differs"
test_metrics() { sed 's/.*\("train_loss".*"test_acc": [0-9.]*\).*/\1/' "$1/metrics.jsonl"; }
[ -n "$(test_metrics "$work/straight")" ] && [ "$(test_metrics "$work/straight")" = "$(test_metrics "$work/on_device")" ] \
  && ok || fail "data.on_device metrics differ: $(test_metrics "$work/on_device")"

# 3. Preemption mid-epoch.
"$cresnet" train -c "$cfg" "${subset[@]}" -o train.epochs=2 -o log.every_steps=1 \
  -o log.dir="$work/preempted" >"$work/preempt.log" 2>&1 &
pid=$!
for _ in $(seq 200); do
  grep -q '"step": 3,' "$work/preempted/metrics.jsonl" 2>/dev/null && break
  sleep 0.1
done
kill -USR1 "$pid"
wait "$pid"; rc=$?
[ $rc -eq 75 ] && ls "$work/preempted/checkpoints/" | grep -qE '^epoch_000[01]_step_[0-9]{6}.safetensors$' \
  && ok || { fail "SIGUSR1: exit $rc, checkpoints: $(ls "$work/preempted/checkpoints/" 2>&1)"; cat "$work/preempt.log"; }
"$cresnet" train -c "$cfg" "${subset[@]}" -o train.epochs=2 -o log.every_steps=1 \
  -o log.dir="$work/preempted" >"$work/requeued.log" 2>&1 || fail "requeued run"
grep -q "resumed from .*_step_" "$work/requeued.log" && ok || fail "requeued run did not resume"
python3 "$root/tests/train/compare_checkpoints.py" "$work/straight/checkpoints/epoch_0002.safetensors" \
  "$work/preempted/checkpoints/epoch_0002.safetensors" && ok || fail "preempted run differs from straight run"
ls "$work/preempted/checkpoints/" | grep -q _step_ && fail "stale preemption checkpoint kept" || ok

# 4. Damage and numerical failure.
ck=$work/straight/checkpoints/epoch_0002.safetensors
cp "$ck" "$work/damaged.safetensors"
printf '\x42' | dd of="$work/damaged.safetensors" bs=1 seek=$(( $(stat -c %s "$ck") - 100 )) conv=notrunc 2>/dev/null
err=$("$cresnet" eval -c "$cfg" "${common[@]}" --checkpoint "$work/damaged.safetensors" 2>&1 >/dev/null); rc=$?
[ $rc -eq 4 ] && grep -q "checksum" <<<"$err" && ok || fail "damaged checkpoint: exit $rc: $err"
err=$("$cresnet" train -c "$cfg" "${subset[@]}" -o train.epochs=1 -o optimizer.lr=1e30 \
  -o schedule.name=constant -o log.dir="$work/nan" 2>&1 >/dev/null); rc=$?
[ $rc -eq 5 ] && grep -qE "^cresnet: error: train: step [0-9]+ \(epoch 1\): loss is (NaN|Inf)" <<<"$err" \
  && ok || fail "NaN run: exit $rc: $err"

finish

#!/usr/bin/env bash
# A short training run in the sanitizer build (ASan + UBSan, LeakSanitizer at
# exit): ResNetSmall, 4 steps on 256 CIFAR-10 images and an evaluation of the
# test set, a checkpoint, then a resumed second epoch (loading it) and `eval`
# of the result. Every run must exit 0 with no sanitizer report.
# usage: train_short.sh CRESNET REPO_ROOT DATA_DIR
set -u
cresnet=$1 root=$2 data=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/../check.sh"
args=(-c "$root/configs/resnet_small.yaml" -o data.dir="$data" -o data.train_limit=256
      -o train.batch_size=64 -o log.every_steps=1 -o log.progress=off -o log.dir="$work/run")
report='ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:'

# run NAME ARGS...: exit 0 and no sanitizer report in the output.
run() {
  local name=$1 rc
  shift
  OMP_NUM_THREADS=2 "$cresnet" "$@" >"$work/$name.log" 2>&1; rc=$?
  if [ $rc -eq 0 ] && ! grep -qE "$report" "$work/$name.log"; then ok
  else fail "$name: exit $rc"; cat "$work/$name.log"; fi
}
run epoch1 train "${args[@]}" -o train.epochs=1 -o checkpoint.resume=none
run epoch2 train "${args[@]}" -o train.epochs=2
grep -q "resumed from .*epoch_0001" "$work/epoch2.log" && ok || fail "second run did not resume"
run eval eval "${args[@]}" --checkpoint "$work/run/checkpoints/epoch_0002.safetensors"
finish

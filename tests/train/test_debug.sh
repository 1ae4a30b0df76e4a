#!/usr/bin/env bash
# device.debug (configs/debug.yaml), on a real-data subset:
#  1. per-layer timing: a row for every layer of ResNetSmall with its forward
#     and backward time;
#  2. the NaN/Inf check names the first bad layer: an absurd learning rate
#     overflows the weights after step 1, and step 2 stops with exit 5 at a
#     layer's output, every layer before it having been checked finite.
# DEVICE (default auto) is device.type: debug_mode_gpu (label gpu) runs this
# with cuda, and prints SKIPPED where no GPU is visible.
# usage: test_debug.sh CRESNET REPO_ROOT DATA_DIR [DEVICE]
set -u
cresnet=$1 root=$2 data=$3 device=${4:-auto}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/../check.sh"
common=(-c "$root/configs/debug.yaml" -o data.dir="$data" -o data.train_limit=256
        -o train.batch_size=64 -o log.every_steps=0 -o device.type="$device")

if ! "$cresnet" train "${common[@]}" -o log.dir="$work/timing" -o log.progress=lines >"$work/timing.log" 2>&1; then
  if grep -q "no GPU is visible" "$work/timing.log"; then
    echo "SKIPPED: no CUDA device"
    exit 0
  fi
  fail "debug run exited with an error"
  cat "$work/timing.log"
else
  ok
fi
layers=(conv1 bn1)
for stage in 1 2 3; do
  layers+=("layer$stage.0.conv1" "layer$stage.0.bn1" "layer$stage.0.conv2")
  [ "$stage" -gt 1 ] && layers+=("layer$stage.0.shortcut.0" "layer$stage.0.shortcut.1")
  layers+=("layer$stage.0.bn2")
done
layers+=(avgpool linear loss)
grep -q "device.debug: time per layer and step (ms), forward / backward" "$work/timing.log" \
  && ok || fail "no per-layer table"
for layer in "${layers[@]}"; do
  grep -qE "^  ${layer//./\\.} +[0-9]+\.[0-9]{3} +[0-9]+\.[0-9]{3}  \( *[0-9.]+% of the step\)$" \
    "$work/timing.log" && ok || fail "no timing row for $layer"
done
rows=$(grep -cE '% of the step\)$' "$work/timing.log")
[ "$rows" -eq ${#layers[@]} ] && ok || fail "$rows timing rows, expected ${#layers[@]}"

err=$("$cresnet" train "${common[@]}" -o log.dir="$work/nan" -o log.progress=off \
  -o optimizer.lr=1e30 -o schedule.name=constant 2>&1 >/dev/null); rc=$?
echo "$err"
[ $rc -eq 5 ] && ok || fail "exit $rc, expected 5"
grep -qE "^cresnet: error: device.debug: step 2, forward pass: [a-z0-9.]+ output has (NaN|Inf) \(element [0-9]+ of [0-9]+\)" \
  <<<"$err" && ok || fail "message does not name the layer: $err"
finish

#!/usr/bin/env bash
# Several ranks on one GPU (label gpu): NCCL refuses two ranks on one
# device, so they talk over the MPI communicator, device memory staged
# through pinned host memory. 20 steps of ResNetSmall on CUDA with 1 and
# with 2 ranks, same seed and global batch: per-step losses within 1e-5
# relative and final checkpoints within 1e-4 (relative L2 per tensor), as
# comm/test_mpi_train.sh asks of the CPU. Then two refusals, exit 2 before
# any step: NCCL ranks on one GPU, and device.type auto where one rank sees
# no GPU. Without a GPU: SKIPPED, exit 0.
# usage: test_mpi_gpu_train.sh CRESNET REPO_ROOT DATA_DIR
set -u
cresnet=$1 root=$2 data=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/../check.sh"

run() { # NP: 20 steps of 64 images, a loss line per step, into $work/npNP
  timeout 240 mpirun --allow-run-as-root --oversubscribe -np "$1" -x LD_LIBRARY_PATH \
    "$cresnet" train -c "$root/configs/resnet_small.yaml" -o data.dir="$data" \
    -o data.train_limit=1280 -o train.batch_size=64 -o train.epochs=1 \
    -o log.every_steps=1 -o log.progress=off -o log.tensorboard=false \
    -o checkpoint.resume=none -o device.type=cuda -o dist.backend=mpi \
    -o log.dir="$work/np$1" >"$work/np$1.log" 2>&1
}

if ! run 1; then
  if grep -q "no GPU is visible" "$work/np1.log"; then
    echo "SKIPPED: no CUDA device"
    exit 0
  fi
  fail "1 rank exited with an error"
  tail -5 "$work/np1.log"
fi
grep -q "communicator mpi" "$work/np1/summary.txt" && ok ||
  fail "1 rank: not on the MPI communicator: $(grep ranks "$work/np1/summary.txt")"
run 2 && ok || { fail "2 ranks on one GPU exited with an error"; tail -5 "$work/np2.log"; }
grep -q "ranks 2, backend cuda, communicator mpi" "$work/np2/summary.txt" && ok ||
  fail "2 ranks: $(grep ranks "$work/np2/summary.txt")"
python3 "$root/tests/train/compare_losses.py" "$work/np2/metrics.jsonl" "$work/np1/metrics.jsonl" 1 20 &&
  ok || fail "2 ranks' losses differ from 1 rank's"
python3 "$root/tests/train/compare_checkpoints.py" --rtol 1e-4 \
  "$work/np2/checkpoints/epoch_0001.safetensors" "$work/np1/checkpoints/epoch_0001.safetensors" &&
  ok || fail "2 ranks' checkpoint differs from 1 rank's"
# NCCL's two ranks on one GPU: refused before NCCL starts, both named (the
# GPUs' UUIDs compared; one GPU made visible, so the ranks must collide).
# Each run is 1 epoch of 1,280 images, so a regression fails fast.
refused() { # NAME EXPECTED [mpirun args...]: 2 ranks exit 2 with EXPECTED, before training
  local name=$1 expected=$2
  shift 2
  timeout 120 mpirun --allow-run-as-root --oversubscribe -np 2 -x LD_LIBRARY_PATH "$@" \
    -c "$root/configs/resnet_small.yaml" -o data.dir="$data" -o data.train_limit=1280 \
    -o train.batch_size=64 -o train.epochs=1 -o log.dir="$work/$name" >"$work/$name.log" 2>&1
  local status=$?
  [ "$status" -eq 2 ] && grep -q "$expected" "$work/$name.log" && ok ||
    fail "$name: exit $status, expected 2 and '$expected': $(grep error "$work/$name.log" | head -2)"
}
one_gpu=${CUDA_VISIBLE_DEVICES:-0}
CUDA_VISIBLE_DEVICES=${one_gpu%%,*} refused nccl-one-gpu "ranks 0 and 1 share one GPU (GPU-" \
  -x CUDA_VISIBLE_DEVICES "$cresnet" train -o device.type=cuda -o dist.backend=nccl
# device.type auto where rank 1 sees no GPU: refused, not a hang (one rank
# on the CPU, the other waiting for it in GPU collectives).
refused auto-mixed "auto: rank 0 sees [0-9]* GPUs, rank 1 sees none" bash -c \
  '[ "${OMPI_COMM_WORLD_RANK:-0}" = 1 ] && export CUDA_VISIBLE_DEVICES=; exec "$@"' _ \
  "$cresnet" train -o device.type=auto
# The sharded evaluation (rank 1's running statistics and test images too).
python3 - "$work/np2/metrics.jsonl" "$work/np1/metrics.jsonl" <<'PY' && ok || fail "2 ranks' test loss differs"
import json, sys
def test_loss(path):
    return [r["test_loss"] for r in map(json.loads, open(path)) if "test_loss" in r][-1]
a, b = test_loss(sys.argv[1]), test_loss(sys.argv[2])
print(f"test loss: 2 ranks {a:.6f}, 1 rank {b:.6f}")
sys.exit(abs(a - b) > 1e-4 * abs(b))
PY
finish

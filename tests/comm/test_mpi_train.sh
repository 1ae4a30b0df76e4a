#!/usr/bin/env bash
# Data-parallel training under a real mpirun, on real CIFAR-10:
#  1. invariance: 20 steps of ResNetSmall, same seed and global batch, with
#     1, 2 and 4 ranks (2 and 4 with small gradient buckets): per-step losses
#     within 1e-5 relative, final weights within 1e-4 (relative L2 per tensor);
#  2. a checkpoint written with 4 ranks resumes with 2 and continues the same
#     trajectory;
#  3. a global batch that does not divide among the ranks is exit 2, one
#     line a rank; so are ranks started with different configs;
#  4. a rank killed with SIGKILL ends the job: the others exit with code 6
#     and a message, mpirun names the lost rank, within 60 s;
#  5. a rank that hangs without dying (SIGSTOP) ends the job too: the other
#     rank's watchdog gives up after dist.timeout_s with exit code 6 and a
#     line saying which wait made no progress, and no process is left;
#  6. and a healthy run with a timeout shorter than the run itself (through
#     evaluation, checkpoints and the end) is left alone.
# usage: test_mpi_train.sh CRESNET REPO_ROOT DATA_DIR
set -u
cresnet=$1 root=$2 data=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/../check.sh"
compare=$root/tests/train/compare_checkpoints.py

# run NP DIR [overrides...]: 20 steps of 64 images per epoch, a loss line per step.
run() {
  local np=$1 dir=$2
  shift 2
  timeout 600 mpirun --allow-run-as-root --oversubscribe -np "$np" -x OMP_NUM_THREADS=1 \
    "$cresnet" train -c "$root/configs/resnet_small.yaml" -o data.dir="$data" \
    -o data.train_limit=1280 -o train.batch_size=64 -o log.every_steps=1 -o log.progress=off \
    -o log.dir="$dir" "$@"
}

# rank_pid_once_stepping DIR RANK: the process of that rank in the run
# writing to DIR, once that run has logged a step (up to 60 s).
rank_pid_once_stepping() {
  local pid
  for _ in $(seq 120); do
    grep -q '"step"' "$1/metrics.jsonl" 2>/dev/null && break
    sleep 0.5
  done
  for pid in $(pgrep -f "log.dir=$1"); do
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && echo "$pid"
  done
}

# losses_agree A B FIRST LAST: step losses of two runs within 1e-5 relative.
losses_agree() {
  python3 "$root/tests/train/compare_losses.py" "$1/metrics.jsonl" "$2/metrics.jsonl" "$3" "$4"
}

# 1. Invariance (with the phase split and a timeline per rank on the way).
# The gradients go in buckets, each all-reduced while the backward pass goes
# on, their starts rounded to 16 bytes: with 4 ranks of 0.05 MiB
# (ResNetSmall's 312 KB in 6), with 2 ranks as small as the trainer's 4,096
# request slots allow (3,903 buckets of 20 floats or fewer a step; 1 rank
# sends none), as summary.txt reports.
for np in 1 2 4; do
  buckets=()
  [ "$np" = 2 ] && buckets=(-o dist.bucket_mb=1e-7)
  [ "$np" = 4 ] && buckets=(-o dist.bucket_mb=0.05)
  run "$np" "$work/np$np" -o train.epochs=1 -o checkpoint.resume=none -o log.progress=lines \
    -o log.timeline="$work/np$np/timeline.json" "${buckets[@]}" >"$work/np$np.log" 2>&1 \
    && ok || { fail "np=$np exited $?"; tail -5 "$work/np$np.log"; }
done
for want in "2 3903 1e-07" "4 6 0.05"; do
  read -r np count mb <<<"$want"
  grep -qx "gradient all-reduce: $count buckets a step (dist.bucket_mb $mb)" "$work/np$np/summary.txt" \
    && ok || fail "np=$np: $(grep -s 'gradient all-reduce' "$work/np$np/summary.txt" || echo 'no bucket line')"
done
num='[0-9.]+ \[[0-9.]+\]'
grep -qE "^  time per step [0-9.]+ ms \(mean over the ranks, \[max\]\): data $num, forward $num, backward $num, comm wait $num, optimizer $num$" \
  "$work/np4.log" && ok || { fail "np=4: no phase line"; cat "$work/np4.log"; }
for f in timeline.json timeline.json.rank1 timeline.json.rank2 timeline.json.rank3; do
  python3 -c "import json, sys; e = json.load(open(sys.argv[1])); sys.exit(sum(x.get('name') == 'optimizer' for x in e) != 20)" \
    "$work/np4/$f" && ok || fail "np=4: $f is not a timeline of 20 steps"
done
for np in 2 4; do
  losses_agree "$work/np$np" "$work/np1" 1 20 && ok || fail "np=$np losses differ from np=1"
  python3 "$compare" --rtol 1e-4 "$work/np$np/checkpoints/epoch_0001.safetensors" \
    "$work/np1/checkpoints/epoch_0001.safetensors" && ok || fail "np=$np weights differ from np=1"
done

# 2. Resume across world sizes: 4 ranks for two epochs, against 4 then 2.
run 4 "$work/straight" -o train.epochs=2 -o checkpoint.resume=none >/dev/null 2>&1 || fail "straight run"
run 4 "$work/switch" -o train.epochs=1 -o checkpoint.resume=none >/dev/null 2>&1 || fail "first half"
run 2 "$work/switch" -o train.epochs=2 >"$work/switch.log" 2>&1 || fail "second half"
grep -q "resumed from .*epoch_0001" "$work/switch.log" && ok || fail "np=2 did not resume"
losses_agree "$work/switch" "$work/straight" 21 40 && ok || fail "resumed losses differ"
python3 "$compare" --rtol 1e-4 "$work/switch/checkpoints/epoch_0002.safetensors" \
  "$work/straight/checkpoints/epoch_0002.safetensors" && ok || fail "resumed weights differ"

# 3. Indivisible global batch.
err=$(run 3 "$work/odd" -o train.epochs=1 2>&1 >/dev/null); rc=$?
# One line a rank at most: a rank already ending on the error says nothing
# more when mpirun's SIGTERM reaches it.
[ $rc -eq 2 ] && grep -q "train.batch_size: 64 is not divisible by the 3 ranks" <<<"$err" \
  && [ "$(grep -c '^cresnet: error:' <<<"$err")" -le 3 ] && ok || fail "np=3 batch 64: exit $rc: $err"

# 3b. Ranks with different configs (device.type auto on one, cpu on the
# other: in a CUDA build they would choose devices differently): exit 2 at
# once, before any collective of the device choice.
err=$(timeout 60 mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1 \
  -np 1 "$cresnet" train -c "$root/configs/resnet_small.yaml" -o data.dir="$data" \
  -o log.dir="$work/differ" -o device.type=auto -o dist.timeout_s=30 : \
  -np 1 "$cresnet" train -c "$root/configs/resnet_small.yaml" -o data.dir="$data" \
  -o log.dir="$work/differ" -o device.type=cpu -o dist.timeout_s=30 2>&1 >/dev/null); rc=$?
[ $rc -eq 2 ] && grep -q "^cresnet: error: rank 1: config differs from rank 0's" <<<"$err" \
  && ok || fail "different configs: exit $rc: $err"

# 4. A lost rank.
run 4 "$work/kill" -o train.epochs=50 -o checkpoint.resume=none >"$work/kill.out" 2>"$work/kill.err" &
job=$!
victim=$(rank_pid_once_stepping "$work/kill" 2)
[ -n "$victim" ] && kill -9 "$victim"
start=$(date +%s)
wait "$job"
rc=$?
took=$(( $(date +%s) - start ))
survivors=$(grep -c "^cresnet: error: mpi: job terminated by the launcher (SIGTERM): another rank failed or was lost" "$work/kill.err")
echo "lost rank: job ended after ${took}s with exit $rc, $survivors survivors reported"
[ -n "$victim" ] && [ "$took" -le 60 ] && [ "$survivors" -eq 3 ] && [ $rc -ne 0 ] \
  && grep -q "process rank 2 .*exited on signal 9" "$work/kill.err" && ok \
  || { fail "lost rank handling"; cat "$work/kill.err"; }

# 5. A hung rank: stopped, not dead, so the launcher sees nothing wrong.
run 2 "$work/hang" -o train.epochs=50 -o checkpoint.resume=none -o dist.timeout_s=10 \
  >"$work/hang.out" 2>"$work/hang.err" &
job=$!
victim=$(rank_pid_once_stepping "$work/hang" 1)
[ -n "$victim" ] && kill -STOP "$victim"
start=$(date +%s)
wait "$job"
rc=$?
took=$(( $(date +%s) - start ))
left=$(pgrep -f "log.dir=$work/hang")
[ -n "$left" ] && { kill -CONT $left; kill -9 $left; } 2>/dev/null
echo "hung rank: job ended after ${took}s with exit $rc"
[ -n "$victim" ] && [ $rc -eq 6 ] && [ "$took" -ge 10 ] && [ "$took" -le 50 ] && [ -z "$left" ] \
  && grep -qE "^cresnet: error: rank 0: MPI [a-z -]+ made no progress for [0-9]+ s \(dist.timeout_s 10\)" \
       "$work/hang.err" && ok \
  || { fail "hung rank handling (victim '$victim', left '$left')"; cat "$work/hang.err"; }

# 6. No false alarm: 3 epochs of about 1.5 s each, ranks waiting at most a
# fraction of a second at a time.
run 2 "$work/healthy" -o train.epochs=3 -o checkpoint.resume=none -o dist.timeout_s=3 \
  >"$work/healthy.log" 2>&1 && ok || { fail "a healthy run with dist.timeout_s 3 failed"; tail -5 "$work/healthy.log"; }

finish

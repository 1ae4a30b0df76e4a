#!/usr/bin/env bash
# Faults a long run meets, each on the real binary (ResNetSmall on a slice of
# the real CIFAR-10: 32 training images, 2 steps an epoch, 16 test images):
#  1. SIGKILL in the middle of a checkpoint write: the previous checkpoint
#     stays byte for byte intact and loadable; the partial temporary file is
#     never taken by `checkpoint.resume: auto`, which resumes from the
#     previous one. strace (when installed) slows every write() by 10 ms so
#     the kill lands mid-file for certain; without it the kill is retried;
#  2. disk full while writing a checkpoint: a file size limit (RLIMIT_FSIZE,
#     EFBIG) and, where this user may mount one, a 1 MB tmpfs (ENOSPC):
#     exit 4 with one line naming the file and the reason, previous
#     checkpoint intact, no partial file left;
#  3. NaN injected into the loss (train.inject_nan_step): exit 5 naming the
#     step, the last good checkpoint intact and loadable;
#  4. run directory or checkpoint directory unusable (under a regular file,
#     in /proc, read-only) and data directory missing: one clear line and
#     the exit code (2 and 3) before any step is taken.
# SIGTERM/SIGUSR1 mid-epoch (checkpoint, exit 75, exact resume) are tested in
# train/test_train.sh, a rank killed mid all-reduce in comm/test_mpi_train.sh.
# usage: test_faults.sh CRESNET REPO_ROOT DATA_DIR
set -u
cresnet=$(realpath "$1") root=$(realpath "$2") data=$3
work=$(mktemp -d)
mounts=()
cleanup() {
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
. "$root/tests/check.sh"
unset CRESNET_DATA

sub=$work/data
mkdir -p "$sub"
for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5; do
  head -c $((32 * 3073)) "$data/$f.bin" >"$sub/$f.bin" || exit 1
done
head -c $((16 * 3073)) "$data/test_batch.bin" >"$sub/test_batch.bin" || exit 1
cfg=$root/configs/resnet_small.yaml
run=(-c "$cfg" -o data.dir="$sub" -o data.train_limit=32 -o train.batch_size=16
     -o log.progress=lines -o log.tensorboard=false -o schedule.name=constant)

# one_line ERR PATTERN: ERR is exactly one line and matches PATTERN (ERE).
one_line() {
  [ "$(printf '%s\n' "$1" | wc -l)" -eq 1 ] && grep -qE "$2" <<<"$1"
}
loads() { # CHECKPOINT: cresnet eval accepts it
  "$cresnet" eval -c "$cfg" -o data.dir="$sub" --checkpoint "$1" >/dev/null 2>"$work/eval.err"
}
temps() { compgen -G "$1/*.tmp.*"; } # the temporary files in a folder
now_ms() { echo $((${EPOCHREALTIME/[.,]/} / 1000)); }

# ---- 1. SIGKILL during a checkpoint write

dir=$work/kill ck=$work/kill/checkpoints
slow=() poll=0.05
if command -v strace >/dev/null && strace -qq -o /dev/null true 2>/dev/null; then
  slow=(strace -f -qq -o /dev/null -e trace=write -e inject=write:delay_exit=10000)
else
  echo "strace not usable here: killing at full speed, up to 5 tries"
  poll=0
fi
killed=""
for attempt in 1 2 3 4 5; do
  "${slow[@]}" "$cresnet" train "${run[@]}" -o train.epochs=3 -o log.dir="$dir" \
    >"$work/kill.log" 2>&1 &
  launcher=$!
  tmp="" deadline=$(($(now_ms) + 120000))
  while kill -0 "$launcher" 2>/dev/null && [ "$(now_ms)" -lt $deadline ]; do
    if [ -s "$ck/epoch_0001.safetensors" ]; then
      [ -e "$work/epoch_0001.copy" ] || cp "$ck/epoch_0001.safetensors" "$work/epoch_0001.copy"
      tmp=$(compgen -G "$ck/epoch_0002.safetensors.tmp.*" | head -n 1)
      [ -n "$tmp" ] && [ -s "$tmp" ] && break
    fi
    sleep $poll
  done
  # The writer's pid ends the temporary name: that process, no other.
  [ -n "$tmp" ] && kill -KILL "${tmp##*.tmp.}" 2>/dev/null
  wait "$launcher" 2>/dev/null
  if [ -n "$tmp" ] && [ -e "$tmp" ] && [ ! -e "$ck/epoch_0002.safetensors" ]; then
    killed=$tmp
    break
  fi
  if [ ${#slow[@]} -gt 0 ]; then break; fi # with strace one try must do
  rm -rf "$dir" "$work/epoch_0001.copy"     # the kill came too late: again
done
if [ -n "$killed" ]; then
  ok
  echo "SIGKILL mid-write (try $attempt): $(basename "$killed") holds $(stat -c %s "$killed") of" \
    "$(stat -c %s "$ck/epoch_0001.safetensors") bytes"
  cmp -s "$ck/epoch_0001.safetensors" "$work/epoch_0001.copy" && ok \
    || fail "SIGKILL: the previous checkpoint changed"
  loads "$ck/epoch_0001.safetensors" && ok \
    || fail "SIGKILL: the previous checkpoint does not load: $(cat "$work/eval.err")"
  # Also a partial file planted by hand, named as the newest of all.
  head -c 1000 "$ck/epoch_0001.safetensors" >"$ck/epoch_0099.safetensors.tmp.1"
  "$cresnet" train "${run[@]}" -o train.epochs=3 -o log.dir="$dir" >"$work/resume.log" 2>&1 \
    && ok || { fail "SIGKILL: the resumed run failed"; cat "$work/resume.log"; }
  grep -q "^resumed from $ck/epoch_0001.safetensors (epoch 1, step 2" "$work/resume.log" && ok \
    || fail "SIGKILL: did not resume from epoch_0001: $(grep resumed "$work/resume.log")"
  loads "$ck/epoch_0003.safetensors" && ok || fail "SIGKILL: the resumed run's checkpoint"
  [ -e "$killed" ] && [ -e "$ck/epoch_0099.safetensors.tmp.1" ] && ok \
    || fail "SIGKILL: partial files were touched"
else
  fail "SIGKILL: no kill landed during a checkpoint write ($(ls "$ck" 2>&1 | tr '\n' ' '))"
  cat "$work/kill.log"
fi

# ---- 2. Disk full while writing a checkpoint

# disk_full NAME DIR ERR RC REASON: the second checkpoint in DIR failed for
# REASON, the first is intact, nothing partial is left.
disk_full() {
  local name=$1 dir=$2 err=$3 rc=$4 reason=$5
  [ "$rc" -eq 4 ] && one_line "$err" "^cresnet: error: $dir/epoch_0002\.safetensors: cannot write checkpoint: [a-z]+ of $dir/epoch_0002\.safetensors\.tmp\.[0-9]+ failed: $reason$" \
    && ok || fail "$name: exit $rc: $err"
  [ ! -e "$dir/epoch_0002.safetensors" ] && [ -z "$(temps "$dir")" ] && ok \
    || fail "$name: partial files left: $(ls "$dir" | tr '\n' ' ')"
  cmp -s "$dir/epoch_0001.safetensors" "$work/$name.copy" && loads "$dir/epoch_0001.safetensors" && ok \
    || fail "$name: the previous checkpoint is damaged"
}

dir=$work/fsize
"$cresnet" train "${run[@]}" -o train.epochs=1 -o log.dir="$dir" >"$work/fsize.log" 2>&1 \
  || fail "RLIMIT_FSIZE: the first epoch failed"
cp "$dir/checkpoints/epoch_0001.safetensors" "$work/RLIMIT_FSIZE.copy"
# 300 KB: less than a checkpoint (635 KB), more than the logs. cresnet itself
# ignores SIGXFSZ, so write() fails with EFBIG instead of killing it.
err=$( (ulimit -f 300 && exec "$cresnet" train "${run[@]}" -o train.epochs=2 -o log.dir="$dir") \
  2>&1 >"$work/fsize.log"); rc=$?
grep -q "^resumed from .*epoch_0001" "$work/fsize.log" && ok || fail "RLIMIT_FSIZE: did not resume"
disk_full RLIMIT_FSIZE "$dir/checkpoints" "$err" $rc "File too large"

mnt=$work/small_fs
mkdir -p "$mnt"
if mount -t tmpfs -o size=1m tmpfs "$mnt" 2>/dev/null; then
  mounts+=("$mnt")
  dir=$work/enospc
  # A 1 MB file system: room for one checkpoint, not for the next beside it.
  "$cresnet" train "${run[@]}" -o train.epochs=1 -o log.dir="$dir" -o checkpoint.dir="$mnt/ck" \
    >"$work/enospc.log" 2>&1 || fail "ENOSPC: the first epoch failed"
  cp "$mnt/ck/epoch_0001.safetensors" "$work/ENOSPC.copy"
  err=$("$cresnet" train "${run[@]}" -o train.epochs=2 -o log.dir="$dir" -o checkpoint.dir="$mnt/ck" \
    2>&1 >>"$work/enospc.log"); rc=$?
  disk_full ENOSPC "$mnt/ck" "$err" $rc "No space left on device"
else
  echo "ENOSPC on a 1 MB tmpfs: skipped (this user may not mount)"
fi

# ---- 3. NaN injected into the loss

dir=$work/nan
# Step 4 is the second step of epoch 2: epoch 1's checkpoint is on disk.
err=$("$cresnet" train "${run[@]}" -o train.epochs=3 -o train.inject_nan_step=4 -o log.dir="$dir" \
  2>&1 >"$work/nan.log"); rc=$?
[ $rc -eq 5 ] && one_line "$err" '^cresnet: error: train: step 4 \(epoch 2\): loss is NaN$' && ok \
  || fail "NaN: exit $rc: $err"
[ "$(ls "$dir/checkpoints")" = "epoch_0001.safetensors" ] && loads "$dir/checkpoints/epoch_0001.safetensors" \
  && ok || fail "NaN: checkpoints $(ls "$dir/checkpoints" | tr '\n' ' ')$(cat "$work/eval.err")"
[ "$(grep -c '"epoch": ' "$dir/metrics.jsonl")" -eq 1 ] && ok || fail "NaN: metrics of a failed epoch"

# ---- 4. Unusable folders: an error before any step

# before_compute NAME CODE PATTERN ARGS...: `cresnet train ARGS` on the whole
# data set (an epoch takes minutes here) exits CODE with one line matching
# PATTERN, printed no progress and took under 5 s.
before_compute() {
  local name=$1 code=$2 pattern=$3
  shift 3
  local t0 ms err rc
  t0=$(now_ms)
  err=$("$cresnet" train -c "$cfg" -o data.dir="$data" -o log.progress=lines "$@" 2>&1 \
    >"$work/$name.out"); rc=$?
  ms=$(($(now_ms) - t0))
  if [ $rc -eq "$code" ] && one_line "$err" "^cresnet: error: $pattern" \
    && ! grep -q "step" "$work/$name.out" && [ $ms -lt 5000 ]; then
    ok
    echo "$name: exit $rc after $ms ms: $err"
  else
    fail "$name: exit $rc after $ms ms: $err; stdout: $(head -c 300 "$work/$name.out")"
  fi
}
touch "$work/a_file"
before_compute log_dir_under_file 2 "$work/a_file/run: cannot create directory: Not a directory" \
  -o log.dir="$work/a_file/run"
before_compute log_dir_is_file 2 "$work/a_file: cannot create directory: Not a directory" \
  -o log.dir="$work/a_file"
before_compute log_dir_in_proc 2 "/proc/[^:]*: cannot create directory: " \
  -o log.dir=/proc/cresnet-faults-test/run
before_compute checkpoint_dir_under_file 2 "$work/a_file/ck: cannot create directory: Not a directory" \
  -o log.dir="$work/ok_run" -o checkpoint.dir="$work/a_file/ck"
[ ! -e "$work/ok_run/metrics.jsonl" ] && ok || fail "checkpoint_dir_under_file: the run started"
if [ "$(id -u)" -ne 0 ]; then
  mkdir -p "$work/read_only" && chmod 555 "$work/read_only"
  before_compute log_dir_read_only 2 "$work/read_only/run: cannot create directory: Permission denied" \
    -o log.dir="$work/read_only/run"
fi
ro=$work/ro_fs
mkdir -p "$ro"
if mount -t tmpfs -o ro,size=64k tmpfs "$ro" 2>/dev/null; then
  mounts+=("$ro")
  before_compute log_dir_read_only_fs 2 "$ro/run: cannot create directory: Read-only file system" \
    -o log.dir="$ro/run"
fi
before_compute data_missing 3 "$work/nowhere/test_batch.bin: cannot open: No such file or directory" \
  -o data.dir="$work/nowhere" -o log.dir="$work/no_data_run"
[ ! -e "$work/no_data_run" ] && ok || fail "data_missing: the run directory was made"

finish

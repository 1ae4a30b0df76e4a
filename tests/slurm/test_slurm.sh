#!/usr/bin/env bash
# The slurm/ scripts on a real one-node Slurm started for the test (Debian's
# slurmctld, slurmd, munge; root only), on real CIFAR-10, 2 MPI ranks with one
# OpenMP thread each (the machine may have only 2 cores):
#  a. `sbatch --wait slurm/cpu.sbatch` runs 20 steps with srun --mpi=pmix (or
#     mpirun where Slurm has no pmix plugin) and the job is COMPLETED with
#     metrics.jsonl and a checkpoint in its run dir; the same job through
#     mpirun (CRESNET_LAUNCHER=mpirun), without a log.dir override, lands in
#     runs/resnet_small-<job id> and ends with bitwise the same weights;
#  b. preemption, once through srun and once through mpirun: a 2-epoch run
#     gets `scancel --signal=USR1 --batch` (the path of Slurm's
#     --signal=B:USR1@120) after a few steps; the batch shell forwards it, the
#     trainer writes epoch_EEEE_step_SSSSSS.safetensors and exits 75, the
#     script requeues the job, which goes back to PENDING, runs again in the
#     same run dir, resumes mid-epoch and completes. Its per-step losses and
#     final checkpoint are bitwise those of an uninterrupted run: both use 2
#     ranks with 1 thread each and the same Open MPI, so every reduction
#     happens in the same order (part a shows srun and mpirun agree bitwise),
#     and resume restores weights, momentum, statistics, schedule and data
#     order exactly (test_train.sh asserts the same for a single process).
#  c. `scancel` of a one-task job (run directly, no MPI): the trainer
#     checkpoints on SIGTERM and exits 75, and the script does not requeue.
# Everything (slurm.conf, state, spool, logs, pid files, munge key and socket,
# run dirs) lives in one temporary folder; every daemon and job is stopped on
# exit. Without root, or with Slurm missing and no way to install it (no
# apt-get, or the install fails), it prints "SKIPPED: <reason>" and exits 0.
# KEEP_SLURM_WORK=1 keeps the folder for a look afterwards.
# usage: test_slurm.sh CRESNET REPO_ROOT DATA_DIR
set -u
cresnet=$(realpath "$1") root=$(realpath "$2") data=$3
skip() { echo "SKIPPED: $*"; exit 0; }
t0=$(date +%s)
elapsed() { echo "$(( $(date +%s) - t0 ))s"; }

# ---- packages ----
[ "$(id -u)" -eq 0 ] || skip "needs root to run slurmctld/slurmd/munged (and to install them)"
missing=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge mpirun:openmpi-bin; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || skip "no apt-get to install ${missing[*]}"
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q "${missing[@]}" >/tmp/cresnet-slurm-apt.$$ 2>&1; then
    apt-get update -q >>/tmp/cresnet-slurm-apt.$$ 2>&1
    if ! apt-get install -y -q "${missing[@]}" >>/tmp/cresnet-slurm-apt.$$ 2>&1; then
      reason=$(tail -1 /tmp/cresnet-slurm-apt.$$)
      rm -f /tmp/cresnet-slurm-apt.$$
      skip "apt-get install ${missing[*]} failed: $reason"
    fi
  fi
  rm -f /tmp/cresnet-slurm-apt.$$
  echo "installed ($(elapsed))"
fi

# ---- a private one-node cluster in a temporary folder ----
# (the munge socket path must stay under 108 bytes: /tmp, not a deep TMPDIR)
work=$(mktemp -d /tmp/cresnet-slurm.XXXXXX)
conf=$work/slurm.conf
cleanup() {
  trap - EXIT INT TERM
  if [ -f "$work/slurmctld.pid" ]; then
    local ids
    ids=$(squeue -h -o %i 2>/dev/null)
    # shellcheck disable=SC2086
    [ -n "$ids" ] && scancel $ids 2>/dev/null
    for _ in $(seq 30); do
      [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
      sleep 1
    done
  fi
  local f pid
  for f in slurmd slurmctld munge/munged; do
    pid=$(cat "$work/$f.pid" 2>/dev/null) || continue
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null
  done
  # Anything left that this cluster started (slurmstepd, job processes)
  # carries our SLURM_CONF in its environment.
  local left=()
  for f in /proc/[0-9]*; do
    pid=${f#/proc/}
    [ "$pid" = $$ ] && continue
    tr '\0' '\n' 2>/dev/null <"$f/environ" | grep -qx "SLURM_CONF=$conf" && left+=("$pid")
  done
  if [ ${#left[@]} -gt 0 ]; then
    echo "stopping ${#left[@]} leftover processes: ${left[*]}"
    kill -9 "${left[@]}" 2>/dev/null
  fi
  if [ "${KEEP_SLURM_WORK:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Nothing from an outer Slurm job may leak into ours.
for v in $(compgen -e); do
  case $v in SLURM_*|SBATCH_*|SRUN_*|SALLOC_*|CRESNET_*) unset "$v" ;; esac
done
export SLURM_CONF=$conf CRESNET=$cresnet TMPDIR=$work/tmp   # Open MPI session dirs too
mkdir -p "$TMPDIR"
mkdir -p "$work/munge" "$work/state" "$work/spool" "$work/log"
dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 2>/dev/null
chmod 400 "$work/munge/munge.key"
sock=$work/munge/munge.sock
munged --force --key-file="$work/munge/munge.key" --socket="$sock" \
  --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" \
  --seed-file="$work/munge/munged.seed" || { echo "FAIL: munged did not start"; exit 1; }
munge -n -S "$sock" | unmunge -S "$sock" >/dev/null || { echo "FAIL: munge does not work"; exit 1; }

read -r ctld_port slurmd_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
host=$(hostname -s)
cpus=$(nproc); [ "$cpus" -ge 2 ] || cpus=2   # 2 ranks need 2 CPUs; config_overrides trusts this
cat >"$conf" <<EOF
# One-node cluster of tests/slurm/test_slurm.sh
ClusterName=cresnettest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again
AuthInfo=socket=$sock,cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
MinJobAge=3600
KillWait=10
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -c || { echo "FAIL: slurmctld did not start"; exit 1; }
slurmd || { echo "FAIL: slurmd did not start"; exit 1; }
state=""
for _ in $(seq 60); do
  state=$(sinfo -h -o %T 2>/dev/null)
  [ "$state" = idle ] && break
  sleep 1
done
if [ "$state" != idle ]; then
  echo "FAIL: the node is '$state', not idle, after 60 s"
  tail -5 "$work/log/slurmctld.log" "$work/log/slurmd.log"
  exit 1
fi
pmix=no
srun --mpi=list 2>&1 | grep -qw pmix && pmix=yes
echo "slurm $(sinfo -V | cut -d' ' -f2) up on $host, ports $ctld_port/$slurmd_port, pmix: $pmix ($(elapsed))"

. "$(dirname "$0")/../check.sh"
cfg=$root/configs/resnet_small.yaml
jobopts=(--chdir="$work" --ntasks-per-node=2 --cpus-per-task=1 --mem=0 --time=30)
train=(-o data.dir="$data" -o train.batch_size=64 -o log.every_steps=1 -o log.progress=lines
       -o checkpoint.keep=10)
compare=$root/tests/train/compare_checkpoints.py
field() { [ -n "$1" ] && scontrol show job "$1" 2>/dev/null | grep -o "$2=[^ ]*" | head -1 | cut -d= -f2; }
jobid_of() { sed -n 's/^Submitted batch job \([0-9]*\).*/\1/p' "$1"; }
nsteps() { local n; n=$(grep -c '"step"' "$1" 2>/dev/null); echo "${n:-0}"; }
# wait_job ID: until the job has ended for good (a requeued job goes on),
# polling each second (sbatch --wait polls at up to 30 s); its exit code.
wait_job() {
  local s
  [ -n "$1" ] || return 125
  for _ in $(seq 1200); do
    s=$(field "$1" JobState)
    case $s in
      COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED)
        return "$(field "$1" ExitCode | cut -d: -f1)" ;;
    esac
    sleep 1
  done
  return 124
}
# losses_equal A B N: steps 1..N logged in both with identical losses.
losses_equal() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
def steps(path):
    return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if "step" in r}
a, b, n = steps(sys.argv[1]), steps(sys.argv[2]), int(sys.argv[3])
missing = [s for s in range(1, n + 1) if s not in a or s not in b]
differ = [s for s in range(1, n + 1) if s in a and s in b and a[s] != b[s]]
print(f"steps 1-{n}: {len(missing)} missing, {len(differ)} with different losses"
      + (f" (first {differ[0]}: {a[differ[0]]} vs {b[differ[0]]})" if differ else ""))
sys.exit(0 if not missing and not differ else 1)
PY
}

# ---- a. one short job, then the same through mpirun with the default run dir ----
start=$(date +%s)
sbatch --wait "${jobopts[@]}" -o "$work/a.out" "$root/slurm/cpu.sbatch" "$cfg" "${train[@]}" \
  -o data.train_limit=1280 -o train.epochs=1 -o log.dir="$work/a" >"$work/a.sub" 2>&1
rc=$?
id=$(jobid_of "$work/a.sub")
echo "a. job ${id:-?}: sbatch --wait exit $rc, $(field "$id" JobState) in $(( $(date +%s) - start ))s"
[ $rc -eq 0 ] && [ "$(field "$id" JobState)" = COMPLETED ] && ok \
  || { fail "a: exit $rc, state $(field "$id" JobState)"; cat "$work/a.sub"; tail -20 "$work/a.out"; }
[ "$(nsteps "$work/a/metrics.jsonl")" = 20 ] && ok || fail "a: metrics.jsonl has $(nsteps "$work/a/metrics.jsonl") step lines, not 20"
[ -s "$work/a/checkpoints/epoch_0001.safetensors" ] && ok || fail "a: no checkpoints/epoch_0001.safetensors"
want=srun; [ $pmix = yes ] || want=mpirun
grep -q "^launcher    $want" "$work/a.out" && grep -q "^ranks       2 " "$work/a.out" \
  && grep -q "^run dir     $work/a$" "$work/a.out" && grep -q "^job         $id " "$work/a.out" \
  && ok || { fail "a: header"; head -15 "$work/a.out"; }

start=$(date +%s)
id2=$(CRESNET_LAUNCHER=mpirun sbatch --parsable "${jobopts[@]}" -o "$work/a2.out" "$root/slurm/cpu.sbatch" \
  "$cfg" "${train[@]}" -o data.train_limit=1280 -o train.epochs=1)
wait_job "$id2"
rc=$?
run2=$work/runs/resnet_small-$id2
echo "a. job ${id2:-?} (mpirun): exit $rc, $(field "$id2" JobState) in $(( $(date +%s) - start ))s"
[ $rc -eq 0 ] && [ "$(field "$id2" JobState)" = COMPLETED ] && grep -q "^launcher    mpirun" "$work/a2.out" \
  && ok || { fail "a: mpirun job: exit $rc"; tail -20 "$work/a2.out"; }
python3 "$compare" "$run2/checkpoints/epoch_0001.safetensors" "$work/a/checkpoints/epoch_0001.safetensors" \
  && ok || fail "a: no $run2/checkpoints/epoch_0001.safetensors, or it differs from the srun job's"

# ---- b. preemption and requeue against an uninterrupted run ----
# 100 steps per epoch, 2 epochs (about 25 s on 2 cores).
long=("${train[@]}" -o data.train_limit=6400 -o train.epochs=2)
start=$(date +%s)
id=$(sbatch --parsable "${jobopts[@]}" -o "$work/straight.out" "$root/slurm/cpu.sbatch" "$cfg" "${long[@]}" \
  -o log.dir="$work/straight")
wait_job "$id" || { fail "b: the uninterrupted run"; tail -20 "$work/straight.out"; }
echo "b. uninterrupted job $id: $(( $(date +%s) - start ))s"

# preempt LAUNCHER: the same run, sent SIGUSR1 after a few steps through the
# batch shell, requeued, resumed and completed; then compared with straight.
preempt() {
  local launcher=$1 pre=$work/pre-$1 out=$work/pre-$1.out
  local start id at states s f step_ck rc
  start=$(date +%s)
  id=$(CRESNET_LAUNCHER=$launcher sbatch --parsable "${jobopts[@]}" -o "$out" "$root/slurm/cpu.sbatch" "$cfg" "${long[@]}" \
    -o log.dir="$pre")
  for _ in $(seq 240); do
    [ -z "$id" ] || [ "$(nsteps "$pre/metrics.jsonl")" -ge 5 ] && break
    sleep 0.5
  done
  at=$(nsteps "$pre/metrics.jsonl")
  scancel --signal=USR1 --batch "$id"
  echo "b. job $id ($launcher): SIGUSR1 to the batch shell with $at steps logged ($(( $(date +%s) - start ))s)"
  # Watch it stop, go back to the queue, run again and end.
  states="" step_ck=""
  for _ in $(seq 2400); do
    s=$(squeue -h -j "$id" -o %T 2>/dev/null)
    [ -n "$s" ] && [ "${states##* }" != "$s" ] && states="$states $s"
    for f in "$pre/checkpoints"/epoch_*_step_*.safetensors; do
      [ -e "$f" ] && [ -z "$step_ck" ] && step_ck=$(basename "$f")
    done
    case $(field "$id" JobState) in
      COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED) break ;;
    esac
    sleep 0.5
  done
  rc=$(field "$id" ExitCode | cut -d: -f1)
  echo "b. job $id ($launcher): preempted at ${step_ck:-?}, states$states; exit $rc, $(field "$id" JobState), restarts $(field "$id" Restarts) after $(( $(date +%s) - start ))s"
  [ "$rc" = 0 ] && [ "$(field "$id" JobState)" = COMPLETED ] && [ "$(field "$id" Restarts)" = 1 ] \
    && ok || { fail "b ($launcher): exit $rc, state $(field "$id" JobState), restarts $(field "$id" Restarts)"; cat "$out"; }
  [[ "$states" =~ RUNNING.*PENDING.*RUNNING ]] && ok || fail "b ($launcher): states seen:$states (want RUNNING, PENDING, RUNNING)"
  grep -q "^stopped by a signal after step [0-9]*: checkpoint written, exit 75" "$out" \
    && grep -q "^cresnet-slurm: exit 75 .*requeueing job $id" "$out" \
    && ok || { fail "b ($launcher): no exit 75 and requeue in the job's output"; cat "$out"; }
  [[ "$step_ck" =~ ^epoch_[0-9]{4}_step_[0-9]{6}\.safetensors$ ]] \
    && grep -q "^resumed from $pre/checkpoints/$step_ck " "$out" \
    && ok || { fail "b ($launcher): no resume from a mid-epoch checkpoint (seen: '${step_ck}')"; grep -i resum "$out"; }
  [ "$(grep -c "^job         $id " "$out")" = 2 ] && [ "$(grep -c " start: " "$pre/slurm_jobs.log")" = 2 ] \
    && ok || fail "b ($launcher): the job did not run twice in the same run dir"
  losses_equal "$pre/metrics.jsonl" "$work/straight/metrics.jsonl" 200 && ok \
    || fail "b ($launcher): per-step losses of the preempted run differ from the uninterrupted one"
  if python3 "$compare" "$pre/checkpoints/epoch_0002.safetensors" "$work/straight/checkpoints/epoch_0002.safetensors"; then
    ok
  else
    fail "b ($launcher): final checkpoint not bitwise that of the uninterrupted run"
    python3 "$compare" --rtol 1e-4 "$pre/checkpoints/epoch_0002.safetensors" \
      "$work/straight/checkpoints/epoch_0002.safetensors"
  fi
}
[ $pmix = yes ] && preempt srun
preempt mpirun

# ---- c. scancel is not a preemption: a single process (launched directly)
# checkpoints on SIGTERM and exits 75, but the job stays CANCELLED ----
start=$(date +%s)
id=$(sbatch --parsable --chdir="$work" --ntasks-per-node=1 --cpus-per-task=1 --mem=0 --time=30 \
  -o "$work/cancel.out" "$root/slurm/cpu.sbatch" "$cfg" "${long[@]}" -o log.dir="$work/cancel")
for _ in $(seq 240); do
  [ -z "$id" ] || [ "$(nsteps "$work/cancel/metrics.jsonl")" -ge 5 ] && break
  sleep 0.5
done
scancel "$id"
wait_job "$id"
sleep 3   # a requeue, were there one, would show by now
echo "c. job $id: $(field "$id" JobState), restarts $(field "$id" Restarts) after $(( $(date +%s) - start ))s"
[ "$(field "$id" JobState)" = CANCELLED ] && [ "$(field "$id" Restarts)" = 0 ] \
  && grep -q "^launcher    direct" "$work/cancel.out" \
  && grep -q "^cresnet-slurm: exit 75 while the job is being cancelled: not requeued" "$work/cancel.out" \
  && ls "$work/cancel/checkpoints"/epoch_0000_step_*.safetensors >/dev/null 2>&1 \
  && ok || { fail "c: cancelled single-process job"; cat "$work/cancel.out"; ls "$work/cancel/checkpoints"; }

echo "$passed passed, $failed failed ($(elapsed))"
[ "$failed" -eq 0 ]

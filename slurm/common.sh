# shellcheck shell=bash
# Common logic of the slurm/*.sbatch scripts; each sources this file and calls
#   cresnet_slurm_run CONFIG [-o key=value]...
# What it does, in order:
#  - run directory: runs/<config stem>-<SLURM_JOB_ID> (relative to the submit
#    directory) unless an override sets log.dir; a requeued job keeps its job
#    id, so it finds the same directory and `checkpoint.resume: auto` resumes;
#  - prints a header (job, restart count, nodes, ranks, threads, GPUs,
#    launcher, run dir, git commit) and appends a line to <run dir>/slurm_jobs.log;
#  - launches the ranks: one task directly (a single process), else
#    `srun --mpi=pmix` when `srun --mpi=list` offers pmix, else `mpirun` inside
#    the allocation (CRESNET_LAUNCHER=direct|srun|mpirun forces one);
#    OMP_NUM_THREADS = cpus-per-task; every rank sees all the node's GPUs and
#    the trainer picks one by its local rank;
#  - traps SIGUSR1 (Slurm's `--signal=B:USR1@120` warning, or
#    `scancel --signal=USR1 --batch JOBID`) and forwards it to the launcher
#    (srun and mpirun both forward it to every rank): the trainer finishes its
#    step, writes checkpoints/epoch_EEEE_step_SSSSSS.safetensors and exits 75;
#  - exit 75 (EX_TEMPFAIL: preempted) -> `scontrol requeue $SLURM_JOB_ID`
#    (not when the job itself is being cancelled: SIGTERM seen); any other
#    exit code is passed through.
# Environment: CRESNET (binary, default <repo>/build/cresnet), CRESNET_LAUNCHER,
# CRESNET_SRUN_ARGS / CRESNET_MPIRUN_ARGS (extra launcher options),
# CRESNET_MAX_REQUEUES (default 50).

cresnet_slurm_log() { printf 'cresnet-slurm: %s\n' "$*"; }

# The repository: the folder above this file.
cresnet_slurm_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

cresnet_slurm_run() {
  if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: sbatch slurm/<script>.sbatch CONFIG [-o key=value]..." >&2
    return 2
  fi
  local config=$1
  shift
  local root=$cresnet_slurm_root
  local binary=${CRESNET:-$root/build/cresnet}
  if [ ! -x "$binary" ]; then
    echo "cresnet-slurm: $binary is not an executable: build it (cmake -S . -B build && cmake --build build) or set CRESNET" >&2
    return 2
  fi
  case $config in /*) ;; *) [ -f "$config" ] || [ ! -f "$root/$config" ] || config=$root/$config ;; esac
  if [ ! -f "$config" ]; then
    echo "cresnet-slurm: config $config not found (in $PWD or $root)" >&2
    return 2
  fi

  # Run directory: the last log.dir override wins, as in the trainer.
  local jobid=${SLURM_JOB_ID:-local-$$} stem rundir="" arg prev=""
  stem=$(basename "$config"); stem=${stem%.*}
  for arg in "$@"; do
    if [ "$prev" = "-o" ]; then
      case $arg in log.dir=*) rundir=${arg#log.dir=} ;; esac
    fi
    case $arg in -olog.dir=*) rundir=${arg#-olog.dir=} ;; esac
    prev=$arg
  done
  local extra=()
  if [ -z "$rundir" ]; then
    rundir=runs/$stem-$jobid
    extra=(-o "log.dir=$rundir")
  fi
  rundir=${rundir#\'}; rundir=${rundir%\'}; rundir=${rundir#\"}; rundir=${rundir%\"}
  mkdir -p "$rundir"
  local rundir_abs
  rundir_abs=$(cd "$rundir" && pwd)

  # Ranks and threads.
  local ntasks=${SLURM_NTASKS:-1} nnodes=${SLURM_JOB_NUM_NODES:-1} cpt=${SLURM_CPUS_PER_TASK:-1}
  export OMP_NUM_THREADS=$cpt
  export SRUN_CPUS_PER_TASK=$cpt   # Slurm >= 22.05: srun no longer reads SLURM_CPUS_PER_TASK

  local launcher=${CRESNET_LAUNCHER:-auto}
  if [ "$launcher" = auto ]; then
    if [ "$ntasks" -eq 1 ] && [ "$nnodes" -eq 1 ]; then
      launcher=direct
    elif command -v srun >/dev/null 2>&1 && srun --mpi=list 2>&1 | grep -qw pmix; then
      launcher=srun
    else
      launcher=mpirun
    fi
  fi
  local cmd=()
  case $launcher in
    direct) cmd=() ;;
    srun)
      # No --kill-on-bad-exit: ranks leave together with exit 75 on preemption,
      # and the trainer aborts the whole job itself on a fatal error.
      # No --gpus-per-task / --gpu-bind by default: every rank sees all the
      # node's GPUs and takes its local rank's (with them, the one it sees).
      # shellcheck disable=SC2206
      cmd=(srun --mpi=pmix --ntasks="$ntasks" ${CRESNET_SRUN_ARGS:-}) ;;
    mpirun)
      local bind=(--bind-to core)
      [ "$cpt" -gt 1 ] && bind=(--map-by "slot:PE=$cpt" --bind-to core)
      local asroot=()
      [ "$(id -u)" -eq 0 ] && asroot=(--allow-run-as-root)
      # shellcheck disable=SC2206
      cmd=(mpirun "${asroot[@]}" -np "$ntasks" "${bind[@]}" -x OMP_NUM_THREADS
           ${CRESNET_MPIRUN_ARGS:-}) ;;
    *) echo "cresnet-slurm: CRESNET_LAUNCHER=$launcher: expected auto, direct, srun or mpirun" >&2
       return 2 ;;
  esac

  local commit="unknown"
  if command -v git >/dev/null 2>&1 && git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
    commit=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
    git -C "$root" diff --quiet HEAD 2>/dev/null || commit="$commit (with local changes)"
  fi
  local restarts=${SLURM_RESTART_COUNT:-0}
  echo "=================================================================="
  echo "cresnet on Slurm   $(date '+%Y-%m-%d %H:%M:%S %Z')"
  echo "job         ${SLURM_JOB_ID:-none} (${SLURM_JOB_NAME:-}), restart $restarts"
  echo "nodes       $nnodes: ${SLURM_JOB_NODELIST:-$(hostname -s)}"
  echo "ranks       $ntasks (${SLURM_NTASKS_PER_NODE:-$ntasks} per node), $cpt OpenMP threads each"
  echo "gpus        ${SLURM_GPUS_ON_NODE:-0} per node (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset})"
  echo "launcher    $launcher${cmd[*]:+: ${cmd[*]}}"
  echo "run dir     $rundir_abs"
  echo "config      $config${*:+ $*}${extra[*]:+ ${extra[*]}}"
  echo "binary      $binary"
  echo "commit      $commit"
  echo "=================================================================="
  echo "$(date '+%F %T') job ${SLURM_JOB_ID:-none} restart $restarts start: $nnodes nodes, $ntasks ranks, $launcher" \
    >>"$rundir_abs/slurm_jobs.log"

  # Launch in the background so that this shell can take signals.
  local child rc preempt=0 cancelled=0
  trap 'preempt=1; cresnet_slurm_log "SIGUSR1: asking the trainer to checkpoint and stop"; kill -USR1 "$child" 2>/dev/null' USR1
  trap 'cancelled=1' TERM
  "${cmd[@]}" "$binary" train -c "$config" "$@" "${extra[@]}" &
  child=$!
  while :; do
    wait "$child"
    rc=$?
    # wait returns > 128 when a trapped signal interrupts it: wait again.
    if [ $rc -gt 128 ] && kill -0 "$child" 2>/dev/null; then continue; fi
    break
  done
  trap - USR1 TERM

  local note="exit $rc" requeue=0
  if [ $rc -eq 75 ]; then
    if [ $cancelled -eq 1 ]; then
      note="exit 75 while the job is being cancelled: not requeued"
    elif [ -z "${SLURM_JOB_ID:-}" ]; then
      note="exit 75 outside Slurm: run again to resume"
    elif [ "$restarts" -ge "${CRESNET_MAX_REQUEUES:-50}" ]; then
      note="exit 75 after $restarts restarts (CRESNET_MAX_REQUEUES): not requeued"
    else
      requeue=1
      note="exit 75 (preempted$([ $preempt -eq 1 ] && echo ", SIGUSR1 forwarded")): requeueing job $SLURM_JOB_ID, it resumes from its checkpoint in $rundir_abs"
    fi
  fi
  # Said before the requeue: Slurm ends this shell as it requeues the job.
  cresnet_slurm_log "$note"
  echo "$(date '+%F %T') job ${SLURM_JOB_ID:-none} restart $restarts end: $note" >>"$rundir_abs/slurm_jobs.log"
  if [ $requeue -eq 1 ] && ! scontrol requeue "$SLURM_JOB_ID"; then
    cresnet_slurm_log "scontrol requeue $SLURM_JOB_ID failed: submit again with -o log.dir=$rundir_abs to resume"
    echo "$(date '+%F %T') job $SLURM_JOB_ID: scontrol requeue failed" >>"$rundir_abs/slurm_jobs.log"
  fi
  return $rc
}

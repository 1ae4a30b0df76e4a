#!/usr/bin/env bash
# Train with N ranks on this machine:  launch/mpirun.sh -np N CONFIG [-o key=value]...
# One process per rank, each bound to its share of the cores, with
# OMP_NUM_THREADS = cores / ranks (at least 1) so compute threads never
# oversubscribe the machine. Extra mpirun options: MPIRUN_ARGS, e.g. per-rank
# logs with MPIRUN_ARGS="--output-filename runs/NAME/ranks" (only rank 0
# prints progress and writes files otherwise). Root is allowed
# (containers); ranks beyond the cores are allowed (oversubscribed).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -lt 3 ] || [ "$1" != "-np" ]; then
  echo "usage: $0 -np N CONFIG [-o key=value]..." >&2
  exit 2
fi
ranks=$2 config=$3
shift 3
cores=$(nproc)
threads=$(( cores / ranks ))
[ "$threads" -ge 1 ] || threads=1
bind=(--bind-to none)
[ "$ranks" -le "$cores" ] && bind=(--map-by "slot:PE=$threads" --bind-to core)
binary=${CRESNET:-$here/build/cresnet}
# shellcheck disable=SC2086
exec mpirun --allow-run-as-root --oversubscribe -np "$ranks" "${bind[@]}" \
  -x OMP_NUM_THREADS="$threads" ${MPIRUN_ARGS:-} \
  "$binary" train -c "$config" "$@"

#!/usr/bin/env bash
# Data-parallel step time on this machine: cresnet bench with 1 and 2 MPI
# ranks, one thread per rank, global batch 128, for small and large. Prints
# the step time, the time each step waits on the gradient all-reduce and its
# share of the step (rank 0's view). Run by hand; nothing asserts speed.
# usage: bench/mpi_scaling.sh [DATA_DIR] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/cifar-10-batches-bin}
steps=${2:-20}
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target cresnet >/dev/null
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; 1 thread per rank; batch 128"
printf '%-7s %5s %12s %10s %14s %8s\n' model ranks images/s ms/step allreduce_ms share
for model in small large; do
  n=$steps
  [ "$model" = large ] && n=$(( steps / 4 > 3 ? steps / 4 : 3 ))
  for np in 1 2; do
    line=$(mpirun --allow-run-as-root --oversubscribe -np "$np" --bind-to core -x OMP_NUM_THREADS=1 \
      build/cresnet bench -c "configs/resnet_$model.yaml" -o data.dir="$data" \
      -o log.progress=off --steps "$n" --warmup 2 | grep '^bench:')
    ips=$(sed -n 's/.* \([0-9.]*\) images\/s total.*/\1/p' <<<"$line")
    ms=$(sed -n 's/.* \([0-9.]*\) ms\/step, .*/\1/p' <<<"$line")
    wait_ms=$(sed -n 's/.*, \([0-9.]*\) ms\/step waiting.*/\1/p' <<<"$line")
    share=$(sed -n 's/.*all-reduce (\([0-9.]*%\)).*/\1/p' <<<"$line")
    printf '%-7s %5s %12s %10s %14s %8s\n' "$model" "$np" "$ips" "$ms" "$wait_ms" "$share"
  done
done

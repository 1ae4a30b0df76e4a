#!/usr/bin/env bash
# Training-step throughput on the CPU, cresnet beside PyTorch in one run:
# batch 128, 2 threads, real CIFAR-10, a different batch every step. Prints
# images/s of each and the ratio for small and medium, then peak RSS for
# large. PyTorch: Debian's python3-torch and the newest torch from PyPI (in a
# venv under build/), both installed here when missing.
# usage: [PRECISION=bf16] bench/cpu_vs_torch.sh [DATA_DIR]   (default ../shared/data/cifar-10-batches-bin;
#        bf16: cresnet's bf16 beside PyTorch's autocast to bfloat16)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/cifar-10-batches-bin}
threads=${THREADS:-2}
steps=${STEPS:-30}
precision=${PRECISION:-fp32} # bf16: cresnet's bf16 beside PyTorch's autocast to bfloat16
export OMP_NUM_THREADS=$threads

scripts/setup.sh >/dev/null
dpkg-query -W python3-torch >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-numpy >/dev/null
venv=build/torch-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  # PyPI's torch imports its CUDA libraries even on a CPU, so it comes with them (a few GB).
  "$venv/bin/pip" install -q torch numpy
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target cresnet_step_bench >/dev/null

field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }
run_torch() { "$1" bench/torch_step.py --precision "$precision" "$data" "$2" 128 "$3" 3; }

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads $threads; batch 128; $precision"
printf '%-8s %-16s %12s %10s\n' model implementation images/s ratio
for model in small medium; do
  ours=$(build/cresnet_step_bench "$data" "$model" 128 "$steps" 3 "$precision" | field images_per_s)
  printf '%-8s %-16s %12s %10s\n' "$model" cresnet "$ours" ""
  for py in /usr/bin/python3 "$venv/bin/python"; do
    line=$(run_torch "$py" "$model" "$steps")
    theirs=$(field images_per_s <<<"$line")
    version=$(field torch <<<"$line")
    ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2fx", a / b }')
    printf '%-8s %-16s %12s %10s\n' "$model" "torch $version" "$theirs" "$ratio"
  done
done
echo
printf '%-8s %-16s %14s\n' model implementation peak_rss_mb
printf '%-8s %-16s %14s\n' large cresnet "$(build/cresnet_step_bench "$data" large 128 3 1 "$precision" | field peak_rss_mb)"
for py in /usr/bin/python3 "$venv/bin/python"; do
  line=$(run_torch "$py" large 3)
  printf '%-8s %-16s %14s\n' large "torch $(field torch <<<"$line")" "$(field peak_rss_mb <<<"$line")"
done

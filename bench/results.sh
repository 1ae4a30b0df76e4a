#!/usr/bin/env bash
# The report's Table 1: trains ResNetSmall and ResNetMedium with the report's
# recipe (configs/resnet_{small,medium}.yaml, 30 epochs) in cresnet and in
# PyTorch (bench/torch_train.py), then makes the figures and Table 1 with
# scripts/report.py into runs/results/report. Runs go to
# runs/results/{cresnet,torch}_{small,medium}; both resume where they stopped
# when the script is run again.
#
# Takes hours on 2 CPU cores (four full trainings, one after another), so it is
# run by hand, not in CI.
#
# usage: bench/results.sh [DATA_DIR]   (default ../shared/data/cifar-10-batches-bin)
# Environment: PYTHON (default /opt/torchvenv/bin/python; needs torch,
# torchvision, pillow, numpy, pyyaml), THREADS (PyTorch threads, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(realpath "${1:-../shared/data/cifar-10-batches-bin}")
python=${PYTHON:-/opt/torchvenv/bin/python}
threads=${THREADS:-2}
out=runs/results

cmake -S . -B build >/dev/null
cmake --build build -j "$(nproc)" --target cresnet >/dev/null

for model in small medium; do
  build/cresnet train -c "configs/resnet_$model.yaml" -o "data.dir=$data" \
    -o "log.dir=$out/cresnet_$model" -o checkpoint.resume=auto
  "$python" bench/torch_train.py "configs/resnet_$model.yaml" "$data" "$out/torch_$model" \
    --threads "$threads" --workers 0 --resume
done

"$(scripts/pyenv.sh)" scripts/report.py -o "$out/report" "$out"/cresnet_small "$out"/torch_small \
  "$out"/cresnet_medium "$out"/torch_medium
cat "$out/report/table1.md"

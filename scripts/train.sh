#!/usr/bin/env bash
# Installs what is needed, builds, and trains: scripts/train.sh CONFIG [-o key=value]...
# With no arguments, the default model: configs/resnet_small.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target cresnet
config=${1:-configs/resnet_small.yaml}
[ $# -gt 0 ] && shift
exec build/cresnet train -c "$config" "$@"

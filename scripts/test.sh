#!/usr/bin/env bash
# Configures, builds and runs the whole test suite (ctest). Extra arguments go
# to ctest, e.g. `scripts/test.sh -L golden`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build=${CRESNET_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)"
cd "$build"
ctest --output-on-failure "$@"

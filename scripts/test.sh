#!/usr/bin/env bash
# Configures, builds and runs the whole test suite (ctest). Extra arguments go
# to ctest, e.g. `scripts/test.sh -L golden`.
# The whole suite (no arguments: what CI runs) then also builds the sanitizer
# build in build-asan (clang, AddressSanitizer + UndefinedBehaviorSanitizer,
# no CUDA) and runs the unit, golden, MPI and sanitize tests there.
# CRESNET_SANITIZE=0 skips that part, CRESNET_SANITIZE=1 adds it to a run
# with arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build=${CRESNET_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)"
(cd "$build" && ctest --output-on-failure "$@")

sanitize=${CRESNET_SANITIZE:-$([ $# -eq 0 ] && echo 1 || echo 0)}
if [ "$sanitize" = 1 ]; then
  asan=${CRESNET_ASAN_BUILD_DIR:-build-asan}
  echo "== sanitizer build ($asan): ASan + UBSan"
  CC=clang cmake -S . -B "$asan" -DCMAKE_BUILD_TYPE=Release -DCRESNET_SANITIZE=ON \
    -DCRESNET_CUDA=OFF >/dev/null
  cmake --build "$asan" -j "$(nproc)"
  (cd "$asan" && ctest --output-on-failure -L 'unit|golden|mpi|sanitize')
fi

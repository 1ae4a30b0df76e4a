#!/usr/bin/env bash
# Installs what building and testing cresnet needs on Debian 12 (as root, or
# with sudo): compiler, CMake, oneDNN (convolutions), libyaml, Open MPI,
# libcurl and zlib (`cresnet data fetch`), and for the sanitizer build and the
# fuzz targets clang with its runtimes (ASan, UBSan, libFuzzer), LLVM's OpenMP
# and llvm-symbolizer; strace (the fault test slows checkpoint writes with it).
# The CUDA toolkit with cuDNN and NCCL is optional and not installed here.
set -euo pipefail
packages=(build-essential cmake libdnnl-dev libyaml-dev libopenmpi-dev openmpi-bin python3
          libcurl4-openssl-dev zlib1g-dev clang libclang-rt-dev libomp-dev llvm strace)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
echo "setup: all build dependencies present"

#!/usr/bin/env bash
# Run HERE (the Debian 12 development machine, x86-64), before a session on
# the lent GPU machine: puts into .device/ (ignored by git) what that
# machine lacks, sized for the device tool's 64 MiB per call (working tree
# included). bench/gpu_session.sh reads it there; docs/gpu_session.md has
# the call plan.
#
#   .device/kit/  Debian 12 .debs: oneDNN (libdnnl2, libdnnl-dev, and the
#                 OpenCL loader libdnnl links), libyaml (runtime, dev), zlib
#                 (runtime, dev; used there only if it has no zlib.h)
#   .device/d1/   data_batch_1.bin, the first 5,000 images of test_batch.bin
#                 (test_batch_5000.bin), batches.meta.txt, rest.md5: enough
#                 for the build, tests, benchmarks and a short training run
#   .device/d2..d4/ rest.part0..2: data_batch_2..5.bin and the whole
#                 test_batch.bin as one byte stream cut in three; with d1 they
#                 make the full data set (gpu_session.sh full), which takes
#                 four back-to-back calls while the machine stays warm
#
# usage: scripts/device_kit.sh [CIFAR_DIR]  (default ../shared/data/cifar-10-batches-bin)
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-../shared/data/cifar-10-batches-bin}
dev=.device
limit=$((64 * 1024 * 1024))
record=3073
batch_bytes=$((10000 * record))

git check-ignore -q "$dev/" || { echo "device_kit: $dev/ is not ignored by git" >&2; exit 1; }
mkdir -p "$dev/kit" "$dev/d1" "$dev/d2" "$dev/d3" "$dev/d4"

# ---- .debs ----
packages="libdnnl2 libdnnl-dev ocl-icd-libopencl1 libyaml-0-2 libyaml-dev zlib1g zlib1g-dev"
missing=""
for p in $packages; do
  ls "$dev/kit/${p}_"*_amd64.deb >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  apt-cache show libdnnl2 >/dev/null 2>&1 || apt-get update -qq
  for p in $missing; do
    # apt's sandbox user cannot write here; as root it warns and goes on.
    (cd "$dev/kit" && apt-get download -q "$p:amd64" 2>&1 | grep -v "unsandboxed" || true)
    ls "$dev/kit/${p}_"*_amd64.deb >/dev/null 2>&1 || { echo "device_kit: no .deb for $p" >&2; exit 1; }
  done
fi
# An epoch in the version is saved as '%3a'; plain names travel more safely.
for f in "$dev"/kit/*%3a*.deb; do
  [ -e "$f" ] && mv "$f" "${f//%3a/-}"
done
# Only the newest of each package: two versions would both be unpacked there.
for p in $packages; do
  ls -1 "$dev/kit/${p}_"*_amd64.deb | sort -V | head -n -1 | xargs -r rm -f
done

# ---- data ----
for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
  [ "$(stat -c %s "$src/$f.bin")" = "$batch_bytes" ] || { echo "device_kit: $src/$f.bin is not 10,000 records" >&2; exit 1; }
done
copy() { # copy SRC DST unless DST already has SRC's size
  [ -f "$2" ] && [ "$(stat -c %s "$2")" = "$(stat -c %s "$1")" ] || cp "$1" "$2"
}
copy "$src/data_batch_1.bin" "$dev/d1/data_batch_1.bin"
copy "$src/batches.meta.txt" "$dev/d1/batches.meta.txt"
if [ "$(stat -c %s "$dev/d1/test_batch_5000.bin" 2>/dev/null || echo 0)" != $((5000 * record)) ]; then
  head -c $((5000 * record)) "$src/test_batch.bin" >"$dev/d1/test_batch_5000.bin"
fi
rest="data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin"
(cd "$src" && md5sum $rest) >"$dev/d1/rest.md5.new"
if ! cmp -s "$dev/d1/rest.md5.new" "$dev/d1/rest.md5" 2>/dev/null ||
   [ ! -f "$dev/d2/rest.part0" ] || [ ! -f "$dev/d3/rest.part1" ] || [ ! -f "$dev/d4/rest.part2" ]; then
  total=$((5 * batch_bytes))
  part=$(((total + 2) / 3))
  tmp=$(mktemp -d)
  (cd "$src" && cat $rest) | split -b "$part" -d -a 1 - "$tmp/rest.part"
  mv "$tmp/rest.part0" "$dev/d2/"
  mv "$tmp/rest.part1" "$dev/d3/"
  mv "$tmp/rest.part2" "$dev/d4/"
  rmdir "$tmp"
fi
mv "$dev/d1/rest.md5.new" "$dev/d1/rest.md5"
(cd "$src" && md5sum data_batch_1.bin batches.meta.txt) >"$dev/d1/d1.md5"

# ---- what each call carries ----
# The working tree travels with every call: tracked files and untracked ones
# git does not ignore.
tree=$(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
size() { du -sb "$@" | awk '{s += $1} END {print s + 0}'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "device_kit: in $(pwd)/$dev"
for p in "$dev"/kit/*.deb; do printf '  %-60s %10s\n' "$p" "$(mib "$(size "$p")")"; done
for d in d1 d2 d3 d4; do
  for p in "$dev/$d"/*; do printf '  %-60s %10s\n' "$p" "$(mib "$(size "$p")")"; done
done
echo "calls (working tree $(mib "$tree") each; limit 64 MiB):"
status=0
call() { # call NAME PATH...
  local name=$1; shift
  local total=$((tree + $(size "$@")))
  local verdict=ok
  [ "$total" -le "$limit" ] || { verdict="OVER THE LIMIT"; status=1; }
  printf '  %-34s carry %-22s %10s  %s\n' "$name" "$*" "$(mib "$total")" "$verdict"
}
call "1 build, tests, bench (+ train)" "$dev/kit" "$dev/d1"
call "2 rest of the data, part 0" "$dev/d2"
call "3 rest of the data, part 1" "$dev/d3"
call "4 part 2, then full training" "$dev/d4"
exit $status

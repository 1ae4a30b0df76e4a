#!/usr/bin/env bash
# One GPU session in one command, run THERE (the lent GPU machine) from the
# repository root by the device tool, after scripts/device_kit.sh ran here
# (docs/gpu_session.md: the calls, what each carries, what is unverified).
#
#   bench/gpu_session.sh [bench]  probe, unpack .device/kit, configure and
#        build with CUDA, GPU and CPU tests, `cresnet bench` (CUDA) beside
#        PyTorch's step for small/medium/large in bf16, fp32 and tf32,
#        Markdown table last
#   bench/gpu_session.sh compare  the benchmarks and table alone, without
#        the tests (what bench/gpu_vs_torch.sh runs)
#   bench/gpu_session.sh train    short real-data training on the GPU
#        (.device/d1: 10,000 training and 5,000 test images): small 2 epochs,
#        large 1 epoch, and CPU against CUDA on the same 10 steps
#   bench/gpu_session.sh full [MODEL [EPOCHS [PRECISION]]]  the whole
#        CIFAR-10 from .device/d1..d4 (carried by four back-to-back calls),
#        then the report's recipe (default small, 30 epochs, fp32), as far
#        as time allows, and the whole job's wall time
#   bench/gpu_session.sh mpi      a build with MPI (/tmp/build-gpu-mpi), the GPU
#        tests under mpirun, and 1 against 2 ranks sharing the GPU over MPI
#   bench/gpu_session.sh torch-full [MODEL [EPOCHS]]  the same in PyTorch
#        on the GPU (bench/torch_train.py --device cuda; default large, 30),
#        without building cresnet
#
# Every stage has a time limit inside one overall budget (GPU_SESSION_BUDGET
# seconds, default 470), later stages go on when an optional one fails, and
# the script stops only when the build does (after the compiler's errors).
# $OUT gets session.log (what is printed), table.md and logs.tar.gz (every
# stage's full log, the run folders without checkpoints): 3 of the 8 files
# the device tool brings back.
# Environment: GPU_SESSION_DRY=1 stops before anything needs a GPU (for a
# check on a machine without one); GPU_SESSION_PYTHON (python3),
# GPU_BUILD_DIR (/tmp/build-gpu), GPU_DEPS (/tmp/deps), CUDNN_ROOT and
# NCCL_ROOT (found through the Python packages otherwise), GPU_MPI (OFF),
# GPU_BUILD_LIMIT (360 s).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
root=$PWD
mode=${1:-bench}
OUT=${OUT:-/tmp/gpu-session-out}
mkdir -p "$OUT"
DRY=${GPU_SESSION_DRY:-0}
PY=${GPU_SESSION_PYTHON:-python3}
build=${GPU_BUILD_DIR:-/tmp/build-gpu}
deps=${GPU_DEPS:-/tmp/deps}
budget=${GPU_SESSION_BUDGET:-470}
logs=/tmp/gpu-logs
runs=$logs/runs
quick=/tmp/cifar-quick
full=/tmp/cifar-full
t0=$SECONDS
summary=()
mkdir -p "$logs" "$runs"
export PY

note() { printf '%s\n' "$*"; }
left() { echo $((budget - (SECONDS - t0))); }

# stage NAME LIMIT LOG CMD...: runs CMD (a program, not a function) under
# `timeout`, limited further by what is left of the budget, its output to
# LOG ("-": to the terminal); records and prints the outcome, returns CMD's code.
stage() {
  local name=$1 limit=$2 log=$3
  shift 3
  local l
  l=$(left)
  if [ "$l" -lt 15 ]; then
    note "== $name: SKIPPED (budget spent)"
    summary+=("$name: skipped, out of time")
    return 124
  fi
  [ "$limit" -le $((l - 10)) ] || limit=$((l - 10))
  note "== $name (limit ${limit} s, at $((SECONDS - t0)) s)"
  local s=$SECONDS rc
  if [ "$log" = - ]; then
    timeout -k 5 "$limit" "$@"
  else
    timeout -k 5 "$limit" "$@" >"$log" 2>&1
  fi
  rc=$?
  local verdict=ok
  [ $rc -eq 0 ] || verdict="FAILED (exit $rc)"
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then verdict="TIMED OUT after ${limit} s"; fi
  note "== $name: $verdict in $((SECONDS - s)) s"
  summary+=("$name: $verdict, $((SECONDS - s)) s")
  return $rc
}

# ---- probe ----

# Python package folder (namespace packages have no __file__).
pyloc() {
  "$PY" - "$@" <<'EOF' 2>/dev/null
import importlib, os, sys
for name in sys.argv[1:]:
    try:
        m = importlib.import_module(name)
    except Exception:
        continue
    paths = list(getattr(m, "__path__", []))
    print(paths[0] if paths else os.path.dirname(m.__file__))
    break
EOF
}

has_header() { echo "#include <$1>" | ${CC:-cc} -E -x c - >/dev/null 2>&1; }

probe() {
  note "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); host $(hostname); $(uname -srm); $(nproc) CPUs"
  free -g 2>/dev/null | sed -n 2p
  if command -v nvidia-smi >/dev/null; then
    timeout 20 nvidia-smi
    timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  else
    note "nvidia-smi: not found"
  fi
  nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
  note "nvcc: ${nvcc:-not found}"
  [ -n "$nvcc" ] && "$nvcc" --version | tail -2
  cmake --version | head -1
  note "ninja: $(ninja --version 2>/dev/null || echo none)"
  note "cc: $(${CC:-cc} --version | head -1)"
  note "mpirun: $(command -v mpirun || echo none) ($(mpirun --version 2>&1 | head -1)); mpicc: $(command -v mpicc || echo none)"
  note "dpkg: $(command -v dpkg-deb || echo none); os: $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-?}"); glibc $(ldd --version | head -1 | awk '{print $NF}')"
  note "python: $(command -v "$PY")"
  timeout 60 "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "cudnn", torch.backends.cudnn.version(), "nccl", torch.cuda.nccl.version() if torch.cuda.is_available() else "-")' 2>&1 | tail -1
  for m in nvidia.cudnn nvidia.nccl nvidia.cu13 nvidia.cublas nvidia.cuda_runtime; do
    note "$m: $(pyloc "$m" || true)"
  done
  for h in zlib.h yaml.h oneapi/dnnl/dnnl.h curl/curl.h omp.h; do
    has_header "$h" && note "header $h: system" || note "header $h: missing"
  done
  note "ldconfig: $(ldconfig -p 2>/dev/null | grep -oE 'lib(dnnl|yaml-0|OpenCL|z|cudnn|nccl|cublas|cudart)\.so\.[0-9]+' | sort -u | tr '\n' ' ')"
  note "files named like cuDNN/NCCL (find, 30 s):"
  timeout 30 find / \( -path /proc -o -path /sys -o -path /dev \) -prune -o \
    \( -name 'libcudnn.so*' -o -name 'cudnn_graph.h' -o -name 'nccl.h' -o -name 'libnccl.so*' \
       -o -name 'libcublas.so*' \) -print 2>/dev/null | head -30
}

# ---- dependencies: the kit's .debs, cuDNN/NCCL/CUDA library links ----

unpack() { # unpack DEB into $deps without dpkg's database
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$1" "$deps"
  else
    local data z=
    data=$(ar t "$1" | grep '^data.tar')
    case $data in *.xz) z=-J ;; *.gz) z=-z ;; *.zst) z=--zstd ;; esac
    ar p "$1" "$data" | tar -x $z -C "$deps"
  fi
}

# Unversioned name for a library that ships only as NAME.so.N (pip wheels).
link_unversioned() { # DIR NAME -> prints the path to link against
  local dir=$1 name=$2 f
  if [ -e "$dir/$name.so" ]; then echo "$dir/$name.so"; return; fi
  f=$(ls "$dir/$name".so.* 2>/dev/null | sort -V | head -1)
  [ -n "$f" ] || return 1
  mkdir -p "$deps/links"
  ln -sf "$f" "$deps/links/$name.so"
  echo "$deps/links/$name.so"
}

find_deps() {
  libdir=$deps/usr/lib/x86_64-linux-gnu
  if [ ! -f "$deps/.unpacked" ]; then
    if ! ls .device/kit/libdnnl2_*.deb >/dev/null 2>&1; then
      note "no .device/kit here and nothing unpacked in $deps: carry .device/kit (scripts/device_kit.sh)"
      return 1
    fi
    rm -rf "$deps"
    mkdir -p "$deps"
    for f in .device/kit/*.deb; do
      case $f in *zlib1g*) continue ;; esac
      unpack "$f" || return 1
    done
    touch "$deps/.unpacked"
  fi
  zlib_args=()
  if ! has_header zlib.h; then
    note "no system zlib.h: using the kit's zlib"
    for f in .device/kit/zlib1g*.deb; do unpack "$f"; done
    zlib_args=(-DZLIB_INCLUDE_DIR="$deps/usr/include"
               -DZLIB_LIBRARY="$(ls "$deps"/lib/x86_64-linux-gnu/libz.so.1.* | head -1)")
  fi
  note "unpacked in $deps: $(cd "$libdir" && ls libdnnl.so* libyaml* libOpenCL* 2>/dev/null | tr '\n' ' ')"

  cudnn_dir=${CUDNN_ROOT:-$(pyloc nvidia.cudnn)}
  if [ -z "$cudnn_dir" ] || [ ! -f "$cudnn_dir/include/cudnn_graph.h" ]; then
    local h
    h=$(find /usr/local /usr/include /opt -name cudnn_graph.h 2>/dev/null | head -1)
    cudnn_dir=${h%/include/cudnn_graph.h}
  fi
  cudnn_lib=""
  for d in "$cudnn_dir/lib" "$cudnn_dir/lib64" "$cudnn_dir/lib/x86_64-linux-gnu"; do
    [ -d "$d" ] && cudnn_lib=$(link_unversioned "$d" libcudnn) && break
  done
  nccl_dir=${NCCL_ROOT:-$(pyloc nvidia.nccl)}
  nccl_lib=""
  [ -n "$nccl_dir" ] && nccl_lib=$(link_unversioned "$nccl_dir/lib" libnccl || true)
  note "cuDNN: ${cudnn_dir:-not found} (link ${cudnn_lib:-none}); NCCL: ${nccl_dir:-not found} (link ${nccl_lib:-none})"
  [ -n "$cudnn_lib" ] || return 1

  nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
  [ -n "$nvcc" ] || { note "no nvcc"; return 1; }
  cuda_root=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
  # A toolkit without unversioned cudart/cublas (pip's) gets links too, to
  # the pip CUDA libraries PyTorch uses.
  cuda_pip=$(pyloc nvidia.cu13 nvidia.cublas || true)
  libpath_args=()
  local have=0 toolkit_lib=""
  for d in "$cuda_root/lib64" "$cuda_root/lib" "$cuda_root/targets/x86_64-linux/lib"; do
    [ -z "$toolkit_lib" ] && [ -e "$d/libcudart.so.13" ] && toolkit_lib=$d
    [ -e "$d/libcublas.so" ] && [ -e "$d/libcudart.so" ] && have=1
  done
  if [ $have = 0 ] && [ -n "$cuda_pip" ]; then
    note "toolkit $cuda_root has no libcublas.so/libcudart.so: linking pip's from $cuda_pip/lib"
    for n in libcudart libcublas libcublasLt; do link_unversioned "$cuda_pip/lib" "$n" >/dev/null; done
    libpath_args=(-DCMAKE_LIBRARY_PATH="$deps/links")
  fi
  # Our libraries, cuDNN's folder (its sub-libraries load from there), the
  # toolkit's (cudart, cublas, and nvrtc for cuDNN's runtime-compiled
  # engines), then pip's CUDA libraries as a last resort.
  ld_path="$libdir:$(dirname "$(readlink -f "$cudnn_lib")")"
  [ -n "$nccl_dir" ] && ld_path="$ld_path:$nccl_dir/lib"
  [ -n "$toolkit_lib" ] && ld_path="$ld_path:$toolkit_lib"
  [ -n "$cuda_pip" ] && ld_path="$ld_path:$cuda_pip/lib"
  ld_path="$ld_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  return 0
}

cmake_args() { # -> the array cmake_args
  local gen=(-G Ninja)
  command -v ninja >/dev/null || gen=(-G "Unix Makefiles")
  cmake_args=(-S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DCRESNET_CUDA=ON -DCRESNET_MPI="${GPU_MPI:-OFF}" -DCRESNET_NCCL=AUTO \
    -DCMAKE_CUDA_COMPILER="$nvcc" -DCUDAToolkit_ROOT="$cuda_root" \
    -DCUDNN_ROOT="$cudnn_dir" -DCUDNN_GRAPH_INCLUDE_DIR="$cudnn_dir/include" \
    -DCUDNN_INCLUDE_DIR="$cudnn_dir/include" -DCUDNN_LIBRARY="$cudnn_lib" \
    ${nccl_dir:+-DNCCL_ROOT="$nccl_dir" -DNCCL_INCLUDE_DIR="$nccl_dir/include"} \
    ${nccl_lib:+-DNCCL_LIBRARY="$nccl_lib"} \
    -DDNNL_INCLUDE_DIR="$deps/usr/include" -DDNNL_LIBRARY="$libdir/libdnnl.so" \
    -DYAML_INCLUDE_DIR="$deps/usr/include" -DYAML_LIBRARY="$libdir/libyaml.so" \
    -DCMAKE_PREFIX_PATH="$deps/usr" "${zlib_args[@]}" "${libpath_args[@]}")
}

show_cache() {
  note "CMakeCache: where each dependency came from"
  grep -E '^(DNNL_INCLUDE_DIR|DNNL_LIBRARY|YAML_INCLUDE_DIR|YAML_LIBRARY|ZLIB_INCLUDE_DIR|ZLIB_LIBRARY[A-Z_]*|CURL_INCLUDE_DIR|CUDNN_[A-Z_]*|NCCL_[A-Z_]*|CMAKE_CUDA_COMPILER|CUDAToolkit_[A-Z_]*|CRESNET_[A-Z_]*):' \
    "$build/CMakeCache.txt" | sed 's/^/  /'
  local bad=0
  for v in DNNL_INCLUDE_DIR DNNL_LIBRARY YAML_INCLUDE_DIR YAML_LIBRARY; do
    grep -q "^$v:[A-Z]*=$deps/" "$build/CMakeCache.txt" || { note "  $v does not point into $deps"; bad=1; }
  done
  return $bad
}

ensure_build() { # unpack, configure (once), build (incrementally)
  note "== dependencies (at $((SECONDS - t0)) s)"
  find_deps || { note "dependencies missing: stop"; return 1; }
  export LD_LIBRARY_PATH=$ld_path
  note "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  if [ ! -f "$build/CMakeCache.txt" ] || ! grep -q "^DNNL_LIBRARY:.*=$deps/" "$build/CMakeCache.txt" ||
    ! grep -q "^CRESNET_MPI:.*=${GPU_MPI:-OFF}\$" "$build/CMakeCache.txt"; then
    rm -f "$build/CMakeCache.txt"
    cmake_args
    stage "configure" 120 "$logs/configure.log" env CRESNET_DATA="$quick" cmake "${cmake_args[@]}"
    local rc=$?
    grep -E '^-- (cresnet|The C|The CUDA|Found)' "$logs/configure.log"
    if [ $rc -ne 0 ]; then
      note "configure failed:"
      tail -30 "$logs/configure.log"
      return 1
    fi
  fi
  if ! show_cache && [ "$DRY" = 1 ]; then
    note "dry run: oneDNN or libyaml not taken from $deps: stop"
    return 1
  fi
  # Keep going past a failing target (-k 0 for ninja, -k for make): a test
  # that another compiler rejects must not cost the GPU session.
  local keep_going=-k
  [ -f "$build/build.ninja" ] && keep_going="-k 0"
  if ! stage "build" "${GPU_BUILD_LIMIT:-360}" "$logs/build.log" cmake --build "$build" -j "$(nproc)" -- $keep_going; then
    note "---- build errors (first 40 lines with 'error') ----"
    grep -n -i -E 'error|undefined reference|fatal' "$logs/build.log" | head -40
    # Executables of an earlier call may still be there: rebuild the two
    # that matter and go on only if that succeeds.
    if cmake --build "$build" -j "$(nproc)" --target cresnet test_cuda_ops >>"$logs/build.log" 2>&1; then
      note "build: some targets failed (above); cresnet and test_cuda_ops are built: going on"
      summary+=("build: INCOMPLETE, some targets failed (see above)")
    else
      note "---- build log tail ----"
      tail -40 "$logs/build.log"
      note "build failed: stop"
      return 1
    fi
  fi
  tail -1 "$logs/build.log"
  note "ldd cresnet (dnnl, yaml, cudnn, cublas, cudart, nccl, z):"
  ldd "$build/cresnet" | grep -E 'dnnl|yaml|cudnn|cublas|cudart|nccl|libz|curl|not found' | sed 's/^/ /'
  timeout 30 "$build/cresnet" summary -m small | tail -2
}

# ---- data ----

quick_data() { # data_batch_1..5 -> the one training file; test: 5,000 images
  local d1=$root/.device/d1
  [ -f "$d1/data_batch_1.bin" ] || { note "no .device/d1: carry it (scripts/device_kit.sh)"; return 1; }
  mkdir -p "$quick"
  for i in 1 2 3 4 5; do ln -sf "$d1/data_batch_1.bin" "$quick/data_batch_$i.bin"; done
  ln -sf "$d1/test_batch_5000.bin" "$quick/test_batch.bin"
  ln -sf "$d1/batches.meta.txt" "$quick/batches.meta.txt"
}

full_data() { # d1 + d2..d4's parts -> the official six files, MD5-checked
  local dev=$root/.device
  for p in d2/rest.part0 d3/rest.part1 d4/rest.part2; do
    [ -f "$dev/$p" ] || { note "missing .device/$p: the four calls must run back to back"; return 1; }
  done
  mkdir -p "$full"
  if ! (cd "$full" && md5sum -c --quiet "$dev/d1/rest.md5" >/dev/null 2>&1); then
    cat "$dev/d2/rest.part0" "$dev/d3/rest.part1" "$dev/d4/rest.part2" |
      split -b 30730000 -d -a 1 - "$full/part"
    local i=0
    for f in data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
      mv "$full/part$i" "$full/$f.bin"
      i=$((i + 1))
    done
    (cd "$full" && md5sum -c "$dev/d1/rest.md5") || return 1
  fi
  ln -sf "$dev/d1/data_batch_1.bin" "$full/data_batch_1.bin"
  ln -sf "$dev/d1/batches.meta.txt" "$full/batches.meta.txt"
  (cd "$full" && md5sum -c --quiet "$dev/d1/d1.md5") || return 1
}

# ---- benchmarks ----

field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" | tail -1; }
# Keyed "PRECISION MODEL": images/s and device MiB of each side; GFLOP per
# image by model (the same for every precision).
declare -A ours theirs ours_mib theirs_mib gflop
table_notes=() # lines printed under the table

# images/s total from a `cresnet bench` log; empty when it has none.
bench_images_per_s() { sed -n 's/^bench: .*: \([0-9.]*\) images\/s total.*/\1/p' "$1" 2>/dev/null; }

# The `cresnet bench` command line of MODEL in PRECISION on the GPU, STEPS
# steps after a tenth as many warm-up ones, its run folder runs/NAME: into
# the array bench_cmd (stage runs programs, not functions).
bench_command() { # MODEL PRECISION STEPS NAME
  bench_cmd=("$build/cresnet" bench -c "configs/resnet_$1.yaml" --steps "$3" --warmup $(($3 / 10))
             -o device.type=cuda -o data.dir="$quick" -o train.precision="$2"
             -o log.dir="$runs/$4" -o log.progress=lines)
}

bench_cresnet() { # MODEL STEPS PRECISION
  local log=$logs/bench_$3_$1.log v
  rm -f "$log" # a skipped stage must not leave an earlier call's numbers
  bench_command "$1" "$3" "$2" "bench-$3-$1"
  stage "cresnet bench $3 $1" 90 "$log" "${bench_cmd[@]}"
  grep -E '^bench:|time per step|error' "$log"
  ours["$3 $1"]=$(bench_images_per_s "$log")
  v=$(sed -n 's/^bench: \([0-9.]*\) GFLOP per training image.*/\1/p' "$log")
  [ -n "$v" ] && gflop[$1]=$v
  ours_mib["$3 $1"]=$(sed -n 's/.*device memory in use \([0-9]*\) MiB.*/\1/p' "$log")
}

bench_torch() { # MODEL STEPS WARMUP PRECISION LIMIT: PyTorch without our LD_LIBRARY_PATH
  local log=$logs/torch_$4_$1.log
  rm -f "$log"
  stage "torch $4 $1" "$5" "$log" env -u LD_LIBRARY_PATH OMP_NUM_THREADS=8 PYTHONUNBUFFERED=1 \
    "$PY" bench/torch_step.py --device cuda --precision "$4" "$quick" "$1" 128 "$2" "$3"
  grep -E 'model=|Error' "$log" | tail -3
  theirs["$4 $1"]=$(field images_per_s <"$log")
  theirs_mib["$4 $1"]=$(field gpu_used_mb <"$log")
}

# Dense peak TFLOP/s from NVIDIA's datasheets (fp32; TF32 and BF16 tensor
# cores without sparsity); empty for a card not listed.
peak_tflops() { # GPU-NAME fp32|tf32|bf16
  local p
  case "$1" in
    *"H200 NVL"* | *"H100 NVL"*) p="60 417.5 835" ;;
    *H200* | *"H100 80GB HBM3"* | *"H100 SXM"*) p="67 494.7 989.4" ;;
    *"H100 PCIe"*) p="51.2 378 756" ;;
    *) return ;;
  esac
  set -- $p "$2"
  case "$4" in fp32) echo "$1" ;; tf32) echo "$2" ;; bf16) echo "$3" ;; esac
}

# "T (M%)": TFLOP/s of IMAGES/S at GFLOP per image, and its share of PEAK.
achieved() { # IMAGES_PER_S GFLOP PEAK
  [ -n "$1" ] && [ -n "$2" ] || { echo —; return; }
  awk -v r="$1" -v g="$2" -v p="$3" 'BEGIN { t = r * g / 1000;
    if (p != "") printf "%.2f (%.1f%%)", t, 100 * t / p; else printf "%.2f", t }'
}

table() {
  local gpu
  gpu=$(timeout 10 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  {
    note "### cresnet (CUDA backend) vs PyTorch: training step, batch 128"
    note ""
    note "${gpu:-unknown GPU}, $(date -u +%Y-%m-%d); cresnet: \`cresnet bench\` (images resident on the GPU, augmented there: data.on_device auto);"
    note "PyTorch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null): bench/torch_step.py (eager, images on the GPU, channels_last,"
    note "cudnn.benchmark; bf16 = autocast to bfloat16). TFLOP/s: model FLOPs (convolutions and linear"
    note "layer, forward + both gradients, the same count for both) per second, and in brackets the share of"
    note "the card's dense datasheet peak for that precision (MFU). MiB: device memory in use after the run"
    note "beyond the CUDA context (cudaMemGetInfo; PyTorch: torch.cuda.mem_get_info, its caching allocator's"
    note "reserve included; its max_memory_allocated is in the torch logs as gpu_mem_mb)."
    note ""
    note "| model | precision | cresnet img/s | torch img/s | ratio | cresnet TFLOP/s (MFU) | torch TFLOP/s (MFU) | cresnet MiB | torch MiB |"
    note "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    local m p
    for m in small medium large; do
      for p in bf16 fp32 tf32; do
        local a=${ours["$p $m"]:-} b=${theirs["$p $m"]:-} g=${gflop[$m]:-} peak r=—
        [ -z "$a$b" ] && continue
        peak=$(peak_tflops "$gpu" "$p")
        [ -n "$a" ] && [ -n "$b" ] && r=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2fx", a / b }')
        note "| $m | $p | ${a:-—} | ${b:-—} | $r | $(achieved "$a" "$g" "$peak") | $(achieved "$b" "$g" "$peak") | ${ours_mib["$p $m"]:-—} | ${theirs_mib["$p $m"]:-—} |"
      done
    done
    note ""
    local line
    for line in "${table_notes[@]}"; do note "$line"; note ""; done
    note "Goals (CUDA issue, bf16 against PyTorch's bf16 autocast): large >= 1.3x, small >= 3x."
  } >"$OUT/table.md"
}

finish() {
  note ""
  note "== stages ($((SECONDS - t0)) s in all)"
  for s in "${summary[@]}"; do note "  $s"; done
  tar -czf "$OUT/logs.tar.gz" -C "$logs" --exclude='*.safetensors' --exclude='*.tfevents*' \
    --exclude='*.pt' . 2>/dev/null
  if [ -f "$OUT/table.md" ]; then
    note ""
    cat "$OUT/table.md"
  fi
}

# ---- modes ----

# cresnet beside PyTorch, images/s of each model and precision, and the
# table (bench/gpu_vs_torch.sh runs this alone).
mode_compare() {
  # Enough steps for a second or more of cresnet's replayed steps (its
  # first session ran 300/150/100: 0.2-0.3 s, too short to compare two
  # kernels on); PyTorch's eager steps are slower, fewer do.
  local -A steps=([small]=3000 [medium]=2000 [large]=1000)
  local -A torch_steps=([small]=600 [medium]=400 [large]=300)
  quick_data || return 1
  mkdir -p "$runs"
  # bf16 first: the issue's comparison (PyTorch's bf16 autocast), then fp32
  # (the reference arithmetic), then tf32; a short budget drops the last.
  local p m
  for p in bf16 fp32 tf32; do
    for m in small medium large; do bench_cresnet "$m" "${steps[$m]}" "$p"; done
    for m in small medium large; do bench_torch "$m" "${torch_steps[$m]}" 20 "$p" 100; done
    table
    if [ "$p" = bf16 ]; then
      layer_times large bf16
      scalar_bn large bf16 "${steps[large]}"
      scalar_bn small bf16 "${steps[small]}"
    fi
    if [ "$p" = fp32 ]; then autotuned large fp32 "${steps[large]}"; fi
  done
  return 0 # a stage that failed says so in the log; the callers go on
}

# The BatchNorm kernels on 16-byte vectors (opt-in: CRESNET_CUDA_BN=vector)
# against the scalar ones (the default since they measured faster on
# ResNetLarge in bf16), on the same model. Alternated, twice each, so that
# a drift of the card's clock shows.
scalar_bn() { # MODEL PRECISION STEPS
  local form run log v line="BatchNorm kernels, $1 $2, images/s in the order run:"
  for run in 1 2; do
    for form in vector scalar; do
      log=$logs/bench_$2_$1_${form}_bn_$run.log
      rm -f "$log"
      bench_command "$1" "$2" "$3" "bench-$2-$1-$form-bn-$run"
      stage "cresnet bench $2 $1, $form BN ($run)" 60 "$log" env CRESNET_CUDA_BN="$form" \
        "${bench_cmd[@]}"
      v=$(bench_images_per_s "$log")
      line="$line $form ${v:-?};"
    done
  done
  table_notes+=("${line%;} (CRESNET_CUDA_BN=vector|scalar; scalar is the default).")
  note "${table_notes[-1]}"
  table
}

# The same model with device.autotune (cuDNN engines timed, the fastest
# taken) beside the default (the heuristic's order, deterministic engines
# first in fp32): whether the engine choice is what PyTorch's
# cudnn.benchmark gains in fp32.
autotuned() { # MODEL PRECISION STEPS
  local log=$logs/bench_$2_$1_autotuned.log v
  rm -f "$log"
  bench_command "$1" "$2" "$3" "bench-$2-$1-autotuned"
  stage "cresnet bench $2 $1, autotuned" 90 "$log" "${bench_cmd[@]}" -o device.autotune=true
  v=$(bench_images_per_s "$log")
  table_notes+=("cuDNN engines, $1 $2: the heuristic's order ${ours["$2 $1"]:-?} images/s, timed (device.autotune=true) ${v:-?} images/s.")
  note "${table_notes[-1]}"
  table
}

# Where a step's time goes, layer by layer (device.debug: synchronous, and
# deterministic engines only, so slower than the benchmark, but it shows the
# heavy layers and whether BatchNorm or the convolutions dominate).
# Two epochs of 10 steps; the second epoch's table, free of the first
# step's plan building, is the one shown.
layer_times() { # MODEL PRECISION
  local log=$logs/layers_$2_$1.log
  rm -f "$log"
  stage "per-layer time $2 $1" 60 "$log" "$build/cresnet" train -c configs/debug.yaml \
    -o model.arch="$1" -o train.precision="$2" -o data.train_limit=1280 -o train.epochs=2 \
    -o device.type=cuda -o data.dir="$quick" -o log.dir="$runs/layers-$2-$1" \
    -o log.tensorboard=false
  note "  device.debug: time per layer and step (ms), forward / backward, epoch 2 (the 12 heaviest)"
  awk '/device.debug: time per layer/ { n = 0; next }
       /^  [A-Za-z0-9_.]+ +[0-9.]+ +[0-9.]+ +\( *[0-9.]+% of the step\)$/ { row[n++] = $0 }
       END { for (i = 0; i < n; i++) print row[i] }' "$log" 2>/dev/null |
    LC_ALL=C sort -t'(' -k2 -rn | head -12
}

mode_bench() {
  # Before the GPU tests: debug_mode_gpu trains on it (CRESNET_DATA).
  quick_data || return 1
  stage "GPU tests (ctest -L gpu)" 200 "$logs/ctest_gpu.log" \
    env CRESNET_CUDNN_LOG=1 ctest --test-dir "$build" -L gpu -V --timeout 180
  note "cuDNN plans made in the GPU tests: $(grep -c 'cuDNN: ' "$logs/ctest_gpu.log"), of them non-deterministic: $(grep -c 'cuDNN: .*non-deterministic' "$logs/ctest_gpu.log")"
  grep -E 'relative error|model step|FAIL|SKIPPED|passed|failed|tests passed|Not Run|Timeout' \
    "$logs/ctest_gpu.log" | sed 's/^[0-9]*: //' | tail -40
  mode_compare || return 1
  # Last, so that a short budget drops these rather than a GPU measurement.
  stage "CPU tests (golden, unit)" 150 "$logs/ctest_cpu.log" ctest --test-dir "$build" \
    -L 'golden|unit' -E 'test_data|bad_inputs|slurm|fuzz' -j 8 --timeout 120
  grep -E 'tests passed|Failed|\*\*\*' "$logs/ctest_cpu.log" | tail -15
}

train() { # NAME LIMIT DATA [-c CONFIG -o ...]: cresnet train, its epoch lines
  local name=$1 limit=$2 data=$3
  shift 3
  # A fresh run each time: the configs resume from their run folder, so a
  # second call with the same name would resume a finished run and do nothing.
  rm -rf "${runs:?}/$name"
  stage "train $name" "$limit" "$runs/$name.log" "$build/cresnet" train "$@" -o data.dir="$data" \
    -o log.dir="$runs/$name" -o log.progress=lines -o log.tensorboard=false
  local rc=$?
  grep -E '^epoch [0-9]+:|time per step|error' "$runs/$name.log"
  return $rc
}

mode_train() {
  quick_data || return 1
  mkdir -p "$runs"
  local small=(-c configs/resnet_small.yaml -o data.train_limit=10000)
  train small-cuda-2ep 150 "$quick" "${small[@]}" -o device.type=cuda -o train.epochs=2 \
    -o schedule.step_size_up=79 -o schedule.max_lr=0.05
  train large-cuda-1ep 150 "$quick" -c configs/resnet_large.yaml -o data.train_limit=10000 \
    -o device.type=cuda -o train.epochs=1
  # CPU against CUDA: the same 10 steps (same seed, data, augmentation).
  local agree=(-c configs/resnet_small.yaml -o data.train_limit=1280 -o train.epochs=1
               -o schedule.step_size_up=5 -o schedule.max_lr=0.05)
  # The CPU once more on one thread: its additions in another order, which
  # over 10 steps moves the checkpoint as far as other reduction orders do.
  # CUDA may land ten times that far from the CPU (on a 2-core VM, 1 thread
  # against 2 moved them 1.2e-4 / 1.3e-4 / 2.2e-2; the first H200 session's
  # CUDA run was 6.2e-4 / 1.0e-3 / 5.9e-2 from its CPU run). Momentum's
  # bound comes out loose (about 0.2): its buffers are sums of gradients
  # that largely cancel; parameters and running statistics are the check.
  train agree-cuda 90 "$quick" "${agree[@]}" -o device.type=cuda
  train agree-cpu 120 "$quick" "${agree[@]}" -o device.type=cpu
  OMP_NUM_THREADS=1 train agree-cpu-1thread 120 "$quick" "${agree[@]}" -o device.type=cpu
  local a=$runs/agree-cuda/checkpoints/epoch_0001.safetensors b=$runs/agree-cpu/checkpoints/epoch_0001.safetensors
  local b1=$runs/agree-cpu-1thread/checkpoints/epoch_0001.safetensors
  if [ -f "$a" ] && [ -f "$b" ] && [ -f "$b1" ]; then
    stage "checkpoints CPU vs CUDA (10 x the CPU's 1 vs N threads)" 60 - env -u LD_LIBRARY_PATH \
      "$PY" tests/train/compare_checkpoints.py --rtol 1e-4 --spread 10 "$b" "$b1" "$b" "$a"
    stage "eval CUDA checkpoint on the CPU" 60 - "$build/cresnet" eval -c configs/resnet_small.yaml \
      -o device.type=cpu -o data.dir="$quick" --checkpoint "$a"
  fi
  {
    note "### Short training on $(timeout 10 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), $(date -u +%Y-%m-%d)"
    note ""
    note "10,000 CIFAR-10 training images (data_batch_1), 5,000 test images; batch 128."
    note ""
    note "| run | last epoch line |"
    note "| --- | --- |"
    for r in small-cuda-2ep large-cuda-1ep agree-cuda agree-cpu agree-cpu-1thread; do
      note "| $r | $(grep -E '^epoch [0-9]+:' "$runs/$r.log" 2>/dev/null | tail -1 | sed 's/|/\\|/g') |"
    done
  } >"$OUT/table.md"
}

mode_full() {
  local model=${1:-small} epochs=${2:-30} precision=${3:-fp32}
  note "== assemble the full CIFAR-10 (at $((SECONDS - t0)) s)"
  full_data || return 1
  timeout 60 "$build/cresnet" data verify --dir "$full" || return 1
  local start=$SECONDS
  local name=full-$model-$epochs-$precision
  train "$name" 100000 "$full" -c "configs/resnet_$model.yaml" -o device.type=cuda \
    -o train.epochs="$epochs" -o train.precision="$precision"
  note "whole job (cresnet train, start to exit): $((SECONDS - start)) s"
  {
    note "### $model, $epochs epochs in $precision on the whole CIFAR-10, $(timeout 10 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), $(date -u +%Y-%m-%d)"
    note ""
    grep -E '^epoch [0-9]+:' "$runs/$name.log" | tail -5 | sed 's/^/    /'
  } >"$OUT/table.md"
}

# The same recipe in PyTorch on this GPU (bench/torch_train.py --device
# cuda, fp32), on the whole CIFAR-10: the twin of `full`, no build needed.
mode_torch_full() {
  local model=${1:-large} epochs=${2:-30}
  note "== assemble the full CIFAR-10 (at $((SECONDS - t0)) s)"
  full_data || return 1
  local out=$runs/torch-full-$model log=$runs/torch-full-$model.log rc
  rm -rf "$out" # no summary of an earlier call's run
  stage "torch train $model, $epochs epochs" 100000 "$log" env -u LD_LIBRARY_PATH \
    PYTHONUNBUFFERED=1 "$PY" bench/torch_train.py "configs/resnet_$model.yaml" "$full" "$out" \
    --device cuda --epochs "$epochs" --threads 4 --workers $(($(nproc) - 2))
  rc=$?
  grep -E '^(torch|epoch [0-9]+:)|Error' "$log"
  cp "$out/metrics.jsonl" "$OUT/torch_full_$model.jsonl" 2>/dev/null
  cat "$out/summary.txt" 2>/dev/null
  return $rc
}

# Several ranks on the one GPU, over MPI (dist.backend: mpi; NCCL refuses
# two ranks on one GPU): a build with MPI (its own build folder), then the
# GPU tests that use MPI under mpirun: the communicator tests and
# mpi_gpu_train (tests/comm/test_mpi_gpu_train.sh: 20 steps of ResNetSmall
# with 1 and with 2 ranks, losses and checkpoints compared).
mode_mpi() {
  quick_data || return 1
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  # test_cuda_ops uses no MPI and runs in `bench`.
  stage "GPU tests under MPI (ctest -L gpu -E test_cuda_ops)" 300 "$logs/ctest_gpu_mpi.log" \
    ctest --test-dir "$build" -L gpu -E test_cuda_ops -V --timeout 280
  grep -E 'passed|failed|FAIL|SKIPPED|Not Run|tests passed|relative' "$logs/ctest_gpu_mpi.log" |
    sed 's/^[0-9]*: //' | tail -20
}

main() {
  note "gpu_session.sh $* (dry ${DRY}); budget ${budget} s; logs in $OUT"
  if [ "$mode" = mpi ]; then # its own build, with MPI
    build=${GPU_BUILD_DIR:-/tmp/build-gpu-mpi}
    export GPU_MPI=ON
  fi
  export -f probe pyloc has_header note
  if [ "$mode" = torch-full ]; then shift; mode_torch_full "$@"; return; fi
  stage "probe" 90 - bash -c probe
  ensure_build || return 1
  if [ "$DRY" = 1 ]; then
    stage "CPU op test on the unpacked oneDNN (dry run)" 300 - ctest --test-dir "$build" \
      -R '^test_cpu_ops$|^test_cuda_ops$' --output-on-failure
    note "GPU_SESSION_DRY=1: stopping before the GPU stages"
    return 0
  fi
  case $mode in
    bench) mode_bench ;;
    compare) mode_compare ;;
    train) mode_train ;;
    full) shift; mode_full "$@" ;;
    mpi) mode_mpi ;;
    build) ;; # probe and build only (then run what you need by hand)
    *) note "unknown mode '$mode' (bench, compare, train, full, torch-full, mpi, build)"; return 2 ;;
  esac
}

# finish runs in the same shell as main, which filled `summary`.
{
  main "$@"
  rc=$?
  finish
  exit $rc
} 2>&1 | tee "$OUT/session.log"
exit "${PIPESTATUS[0]}"

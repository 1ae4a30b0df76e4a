#!/usr/bin/env bash
# Bad input, fed to the real binary: every case of cases.txt (configs,
# overrides, command lines, CIFAR-10 folders, checkpoints) must exit with its
# code and print exactly one `cresnet: error:` line holding its fragment:
# no crash, no sanitizer report, no hang (each case runs under a timeout).
# One line per case, then the count.
# usage: run_bad_inputs.sh CRESNET REPO_ROOT DATA_DIR
set -u
cresnet=$(realpath "$1") root=$(realpath "$2") data=$3
here=$root/tests/bad_inputs
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$root/tests/check.sh"
unset CRESNET_DATA
limit=${BAD_INPUTS_TIMEOUT:-20} # seconds a case may take
start=$SECONDS

# ---- inputs made here: too big to commit, or cut from the real data set

# CIFAR-10 folders of 64 images a file: good, and damaged as the name says.
# A damaged folder links to the good files except the one it damages.
files=(data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch)
good=$work/data/good
mkdir -p "$good"
for f in "${files[@]}"; do head -c $((64 * 3073)) "$data/$f.bin" >"$good/$f.bin" || exit 1; done
variant() { # NAME FILE: the folder $work/data/NAME, FILE (if given) a copy to damage
  mkdir -p "$work/data/$1"
  for f in "${files[@]}"; do ln -s "$good/$f.bin" "$work/data/$1/$f.bin"; done
  if [ $# -gt 1 ]; then rm "$work/data/$1/$2.bin"; cp "$good/$2.bin" "$work/data/$1/$2.bin"; fi
}
poke() { # FILE OFFSET BYTE: one byte overwritten
  printf "\\x$(printf %02x "$3")" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}
variant truncated_record data_batch_2 && truncate -s -1 "$work/data/truncated_record/data_batch_2.bin"
variant extra_bytes test_batch && head -c 100 /dev/zero >>"$work/data/extra_bytes/test_batch.bin"
variant empty_file data_batch_5 && : >"$work/data/empty_file/data_batch_5.bin"
variant missing_test && rm "$work/data/missing_test/test_batch.bin"
variant missing_batch && rm "$work/data/missing_batch/data_batch_4.bin"
variant label_10 data_batch_3 && poke "$work/data/label_10/data_batch_3.bin" $((7 * 3073)) 10
variant label_255 test_batch && poke "$work/data/label_255/test_batch.bin" 0 255
variant file_is_dir && rm "$work/data/file_is_dir/data_batch_1.bin" && mkdir "$work/data/file_is_dir/data_batch_1.bin"
variant dangling && rm "$work/data/dangling/test_batch.bin" && ln -s "$work/nowhere" "$work/data/dangling/test_batch.bin"

# 100,000 nested lists (libyaml alone takes minutes on them) and 2 MB of comments.
{ printf 'model:\n  widths: '; head -c 100000 /dev/zero | tr '\0' '['; head -c 100000 /dev/zero | tr '\0' ']'; echo; } >"$work/deep.yaml"
yes '# a comment line, over and over' | head -c 2000000 >"$work/huge.yaml"

# A real ResNetSmall checkpoint (too big to commit), for the other-model cases.
"$cresnet" train -c "$root/configs/resnet_small.yaml" -o data.dir="$good" -o data.train_limit=64 \
  -o train.batch_size=64 -o train.epochs=1 -o log.progress=off -o log.tensorboard=false \
  -o log.dir="$work/runs/small" >"$work/small.log" 2>&1 \
  && cp "$work/runs/small/checkpoints/epoch_0001.safetensors" "$work/small.safetensors" \
  || { fail "could not train the small checkpoint"; cat "$work/small.log"; }

# resume: auto meets a damaged newest checkpoint beside a good older one.
mkdir -p "$work/runs/auto/checkpoints"
cp "$here/checkpoints/good.safetensors" "$work/runs/auto/checkpoints/epoch_0001.safetensors"
cp "$here/checkpoints/flipped_byte.safetensors" "$work/runs/auto/checkpoints/epoch_0003.safetensors"

# ---- the cases

trim() { local s=$1; s=${s#"${s%%[![:space:]]*}"}; printf '%s' "${s%"${s##*[![:space:]]}"}"; }
cases=0
cd "$work" || exit 1
while IFS='|' read -r name code fragment arguments; do
  name=$(trim "$name")
  case $name in '' | '#'*) continue ;; esac
  code=$(trim "$code") fragment=$(trim "$fragment")
  arguments=${arguments//\$IN/$here}
  arguments=${arguments//\$WORK/$work}
  arguments=${arguments//\$GOOD/$good}
  arguments=${arguments//\$ROOT/$root}
  read -ra args <<<"$arguments"
  cases=$((cases + 1))
  t0=${EPOCHREALTIME/[.,]/}
  timeout -k 5 "$limit" "$cresnet" "${args[@]}" >"$work/stdout" 2>"$work/stderr"
  rc=$?
  err=$(cat "$work/stderr")
  lines=$(wc -l <"$work/stderr")
  why=""
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    why="timed out after ${limit} s"
  elif [ $rc -ne "$code" ]; then
    why="exit $rc, expected $code"
  elif [ "$fragment" = "-" ]; then
    [ -s "$work/stderr" ] && why="expected nothing on stderr"
  elif [ "$lines" -ne 1 ]; then
    why="$lines lines on stderr, expected one"
  elif [[ $err != "cresnet: error: "* ]]; then
    why="not a 'cresnet: error:' line"
  elif [[ $err != *"$fragment"* ]]; then
    why="missing '$fragment'"
  fi
  if [ -z "$why" ]; then
    ok
    printf 'ok    %-26s exit %d  %5d ms\n' "$name" "$rc" $(((${EPOCHREALTIME/[.,]/} - t0) / 1000))
  else
    fail "$name: $why; stderr: $(head -c 600 "$work/stderr")"
  fi
done <"$here/cases.txt"
echo "$cases cases in $((SECONDS - start)) s"
[ "$cases" -ge 40 ] && ok || fail "only $cases cases, want at least 40"
finish

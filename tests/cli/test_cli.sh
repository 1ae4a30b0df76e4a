#!/usr/bin/env bash
# The cresnet binary as a user runs it: summary tables identical to
# torchsummary's (fixtures from make_golden.py), and bad input answered with
# exit code 2 and one `cresnet: error: WHERE: WHAT` line, never a crash.
# usage: test_cli.sh CRESNET FIXTURE_DIR
set -u
cresnet=$1 fixtures=$2
. "$(dirname "$0")/../check.sh"

for model in small medium large; do
  if diff <("$cresnet" summary -m "$model") "$fixtures/summary_$model.txt" >/dev/null; then ok
  else fail "summary -m $model differs from torchsummary"; fi
done
"$cresnet" summary -m small | grep -q '^Total params: 78,042$' && ok || fail "small total"
"$cresnet" summary -m large | grep -q '^Trainable params: 4,903,242$' && ok || fail "large trainable"

# expect_error CODE PATTERN ARGS...: exit CODE, exactly one stderr line matching PATTERN.
expect_error() {
  local code=$1 pattern=$2; shift 2
  local err rc
  err=$("$cresnet" "$@" 2>&1 >/dev/null); rc=$?
  if [ "$rc" -ne "$code" ]; then fail "'$*' exited $rc, expected $code"; return; fi
  if [ "$(printf '%s\n' "$err" | wc -l)" -ne 1 ] || ! grep -qE "$pattern" <<<"$err"; then
    fail "'$*' printed: $err"; return
  fi
  ok
}
expect_error 2 "^cresnet: error: model.arch: unknown model 'tiny'" summary -m tiny
expect_error 2 '^cresnet: error: summary: missing -m' summary
expect_error 2 "^cresnet: error: summary: unexpected argument '--bogus'" summary --bogus
expect_error 2 "^cresnet: error: command line: unknown subcommand 'fly'" fly
# A flag the subcommand does not read is refused, not dropped.
expect_error 2 "^cresnet: error: summary -m: -o is not an option here" summary -m small -o train.epochs=2
expect_error 2 "^cresnet: error: summary -m: -c is not an option here" summary -m small -c x.yaml
expect_error 2 "^cresnet: error: data verify: --steps is not an option here" data verify --dir /nowhere --steps 3
expect_error 2 "^cresnet: error: train: --steps is not an option here" train -c x.yaml --steps 5
expect_error 2 "^cresnet: error: eval: --dir is not an option here" eval --dir /nowhere -c x.yaml

# MPI started without a launcher (a singleton): the error is still one line,
# without Open MPI's MPI_Abort banner under it.
err=$("$cresnet" train -c /dev/null -o dist.backend=mpi -o device.type=cpu -o data.dir=/nowhere \
  -o log.dir="${TMPDIR:-/tmp}/cresnet-cli-$$" 2>&1 >/dev/null); rc=$?
rm -rf "${TMPDIR:-/tmp}/cresnet-cli-$$"
if grep -q "this build has no MPI" <<<"$err"; then
  echo "SKIPPED: singleton MPI (this build has no MPI)"
elif [ "$rc" -eq 3 ] && [ "$(wc -l <<<"$err")" -eq 1 ] && grep -q "^cresnet: error: /nowhere/.*: cannot open" <<<"$err"; then
  ok
else
  fail "singleton MPI, missing data: exit $rc: $err"
fi
expect_error 2 "^cresnet: error: --md5: expected 32 hex digits" data fetch --md5 abc --dir "${TMPDIR:-/tmp}/cresnet-cli-$$"
expect_error 3 "^cresnet: error: .*/nowhere/data_batch_1.bin: cannot open" data verify --dir /nowhere
# data verify --from FILE: the archive's MD5, without unpacking it.
archive=$(mktemp)
printf 'not really an archive\n' >"$archive"
md5=$(md5sum "$archive" | cut -c1-32)
[ "$("$cresnet" data verify --from "$archive" --md5 "$md5")" = "$archive: archive MD5 $md5: ok" ] &&
  ok || fail "data verify --from with the file's MD5"
expect_error 3 "^cresnet: error: $archive: MD5 mismatch: got $md5, expected c32a1d4a" \
  data verify --from "$archive"
expect_error 2 "^cresnet: error: data verify: --md5 needs --from FILE" data verify --md5 "$md5"
rm -f "$archive"

# Custom models through a config: a table for a good one, exit 2 for bad ones.
cfg=$(mktemp)
trap 'rm -f "$cfg"' EXIT
printf 'model:\n  arch: custom\n  widths: [8, 16]\n  blocks: [2, 2]\n' >"$cfg"
if diff <("$cresnet" summary -c "$cfg") "$fixtures/summary_custom.txt" >/dev/null; then ok
else fail "summary -c custom differs from torchsummary"; fi
printf 'model:\n  arch: custom\n  widths: [8, 16]\n  blocks: [2]\n' >"$cfg"
expect_error 2 "blocks has 1 entries but widths has 2" summary -c "$cfg"
printf 'model:\n  arch: custom\n  widths: []\n' >"$cfg"
expect_error 2 "model" summary -c "$cfg"
printf 'model:\n  arch: custom\n  widths: [8, -16]\n' >"$cfg"
expect_error 2 "widths" summary -c "$cfg"

finish

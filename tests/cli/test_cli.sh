#!/usr/bin/env bash
# The cresnet binary as a user runs it: summary tables identical to
# torchsummary's (fixtures from make_golden.py), and bad input answered with
# exit code 2 and one `cresnet: error: WHERE: WHAT` line, never a crash.
# usage: test_cli.sh CRESNET FIXTURE_DIR
set -u
cresnet=$1 fixtures=$2
passed=0 failed=0
ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }

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

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

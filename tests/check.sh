# The shell twin of check.h, sourced by the tests written in bash: ok and
# fail count, finish prints "N passed, N failed" and gives the exit status.
passed=0 failed=0
ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

#!/usr/bin/env bash
# The Python environment of the reports and their tests: a virtual
# environment with matplotlib (scripts/report.py) and tensorboard (reading
# event files back in tests), made once and reused. Prints its python.
# Location: $CRESNET_PYENV, default ~/.cache/cresnet/pyenv.
set -euo pipefail
env_dir=${CRESNET_PYENV:-$HOME/.cache/cresnet/pyenv}
requirements=(matplotlib tensorboard numpy)
if ! "$env_dir/bin/python" -c "import matplotlib, tensorboard, numpy" 2>/dev/null; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >&2
  fi
  python3 -m venv "$env_dir" >&2
  "$env_dir/bin/pip" install -q --disable-pip-version-check "${requirements[@]}" >&2
fi
echo "$env_dir/bin/python"

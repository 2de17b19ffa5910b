#!/usr/bin/env bash
# Installs Ray for the tests of gpusleep.ray (tests/ray) when it is missing; quick when it is
# there. GPUSLEEP_NO_RAY=1 skips it (those tests then report "skipped").
set -euo pipefail
[ "${GPUSLEEP_NO_RAY:-0}" = 1 ] && exit 0
python=${PYTHON:-python3}
have_ray() { "$python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('ray') is None)"; }
have_ray 2>/dev/null && exit 0
if ! "$python" -m pip --version >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-pip >/dev/null
fi
echo "installing ray (for tests/ray)"
# A distribution's own Python refuses packages outside its package manager (PEP 668): then
# install for this user only.
"$python" -m pip install --quiet ray 2>/dev/null ||
  "$python" -m pip install --quiet --user --break-system-packages ray
have_ray

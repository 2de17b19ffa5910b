#!/usr/bin/env bash
# Runs the real-server GPU tests (tests/gpu/test_servers.py: `transformers serve` plain, with
# continuous batching, and with CUDA graphs too; tests/gpu/test_diffusion.py: a diffusers server,
# sleep + wake + refit against kill and relaunch; each under gpusleep against the bare server in
# the same run) and prints their summary; JSON and server logs go to $OUT (default
# ./server-results). SERVERS=transformers or SERVERS=diffusion runs one of them.
#   scripts/fetch-wheels.sh        # where pip works: the serving packages, into .whl
#   scripts/servers.sh             # on the GPU machine; installs .whl/*.whl into /tmp/site
# BUILD_DIR (default build-gpu) is built first unless it already has the CLI.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/server-results}
mkdir -p "$out"
build=${BUILD_DIR:-build-gpu}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  export PATH=/tmp/site/bin:$PATH
fi
if [ ! -x "$build/bin/gpusleep" ]; then
  scripts/build-gpu.sh "$build" "$out/build.log" || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee "$out/versions.txt"
case "${SERVERS:-all}" in
  all) tests="servers diffusion" ;;
  transformers) tests=servers ;;
  diffusion) tests=diffusion ;;
  *) echo "SERVERS is all, transformers or diffusion" >&2; exit 2 ;;
esac
status=0
for t in $tests; do
  GPUSLEEP_TEST_CLI="$PWD/$build/bin/gpusleep" GPUSLEEP_RESULTS_DIR="$out" \
    python3 "tests/gpu/test_$t.py" -v >"$out/test_$t.log" 2>&1
  rc=$?
  [ $rc = 0 ] || [ $rc = 77 ] || status=1  # 77: skipped (no GPU, or its packages missing)
  grep -E "^SUMMARY|^(FAIL|ERROR):|Error|^Ran|^OK|FAILED|skipped" "$out/test_$t.log" | head -40
done
if [ -f "$out/diffusion.json" ] && python3 -c "import matplotlib" 2>/dev/null; then
  python3 scripts/plot_diffusion.py "$out/diffusion.json" "$out/diffusion.png"
fi
echo "SERVERS: $([ $status = 0 ] && echo PASSED || echo FAILED) (results in $out)"
exit $status

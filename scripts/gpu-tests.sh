#!/usr/bin/env bash
# Builds gpusleep on a machine with a GPU and runs, in one go, every test (the GPU ones included),
# the demo, a short sleep/wake benchmark and the gate's per-call cost (scripts/bench-suite.sh runs
# the full suite; scripts/soak.py the 1,000-cycle soak). Results go to $OUT (default:
# ./gpu-results).
#   scripts/gpu-tests.sh            # tests and benchmark
#   scripts/gpu-tests.sh --no-bench
# Dependencies without a package registry: scripts/stage-deps.sh copies nlohmann/json and Catch2
# into .deps, which this script passes to CMake when present.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu-results}
mkdir -p "$out"
build=${BUILD_DIR:-build-gpu}
bench=1
[ "${1:-}" = "--no-bench" ] && bench=0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
scripts/build-gpu.sh "$build" "$out/build.log" || exit 1

status=0
ctest --test-dir "$build" -LE gpu -j 8 --output-on-failure >"$out/ctest-cpu.log" 2>&1 || status=1
tail -3 "$out/ctest-cpu.log"
ctest --test-dir "$build" -L gpu -V >"$out/ctest-gpu.log" 2>&1 || status=1
grep -E "SUMMARY|Test +#|tests passed|FAIL|Error|assert" "$out/ctest-gpu.log" | sed 's/^[0-9]*: //' | head -60

if [ $bench = 1 ]; then
  echo "== demo"
  python3 scripts/demo.py --build "$build" >"$out/demo.log" 2>&1 || status=1
  tail -4 "$out/demo.log"
  echo "== benchmark: 16 GiB in 8 regions, first sleep right after the program allocates"
  python3 scripts/bench_sleep_wake.py --build "$build" --out "$out/bench_sleep_wake.json" \
    2>&1 | tee "$out/bench.log" || status=1
  echo "== the gate's cost per intercepted call while awake"
  scripts/bench_gate.sh "$build" "$out/bench_gate.json" || status=1
fi
echo "GPU SUITE: $([ $status = 0 ] && echo PASSED || echo FAILED)"
exit $status

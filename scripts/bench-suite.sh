#!/usr/bin/env bash
# Builds gpusleep on a GPU machine and runs the performance suite (scripts/bench_suite.py),
# writing bench_suite.json and bench_suite.png to $OUT (default ./gpu-results).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu-results}
mkdir -p "$out"
build=${BUILD_DIR:-build-gpu}
cmake_args=(-DCMAKE_BUILD_TYPE=Release "-DPython3_EXECUTABLE=$(command -v python3)")
[ -d .deps ] && cmake_args+=("-DCMAKE_PREFIX_PATH=$PWD/.deps")
command -v ninja >/dev/null && cmake_args+=(-G Ninja)
if ! { cmake -S . -B "$build" "${cmake_args[@]}" && cmake --build "$build" -j "$(nproc)"; } \
    >"$out/build.log" 2>&1; then
  tail -40 "$out/build.log"; echo "BUILD FAILED"; exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 scripts/bench_suite.py --build "$build" --out "$out/bench_suite.json" \
  --png "$out/bench_suite.png" "$@"

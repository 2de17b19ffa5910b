#!/usr/bin/env bash
# Builds gpusleep on a GPU machine and runs the performance suite (scripts/bench_suite.py),
# writing bench_suite.json and bench_suite.png to $OUT (default ./gpu-results).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu-results}
mkdir -p "$out"
build=${BUILD_DIR:-build-gpu}
scripts/build-gpu.sh "$build" "$out/build.log" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 scripts/bench_suite.py --build "$build" --out "$out/bench_suite.json" \
  --png "$out/bench_suite.png" "$@"

#!/bin/bash
# Builds the library with this machine's compiler and runs the co-location benchmark
# (scripts/colocate.py) on its GPU: JSON and a PNG in $OUT (default colocate-results/).
#   scripts/colocate.sh [--methods gpusleep,refit,relaunch,checkpoint,swap,sequential] [--cycles 3] ...
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/colocate-results}
build=${BUILD_DIR:-build-gpu}
mkdir -p "$out"
scripts/build-gpu.sh "$build" "$out/build.log" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
exec python3 scripts/colocate.py --build "$build" --out "$out" "$@"

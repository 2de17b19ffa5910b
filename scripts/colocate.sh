#!/bin/bash
# Builds the library with this machine's compiler and runs the co-location benchmark
# (scripts/colocate.py) on its GPU: JSON and a PNG in $OUT (default colocate-results/).
#   scripts/colocate.sh [--methods gpusleep,refit,relaunch,checkpoint] [--cycles 3] ...
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/colocate-results}
build=${BUILD_DIR:-build-gpu}
mkdir -p "$out"
cmake_args=(-DCMAKE_BUILD_TYPE=Release "-DPython3_EXECUTABLE=$(command -v python3)")
[ -d .deps ] && cmake_args+=("-DCMAKE_PREFIX_PATH=$PWD/.deps")
command -v ninja >/dev/null && cmake_args+=(-G Ninja)
if ! { cmake -S . -B "$build" "${cmake_args[@]}" && cmake --build "$build" -j "$(nproc)"; } \
    >"$out/build.log" 2>&1; then
  tail -40 "$out/build.log"; echo "BUILD FAILED"; exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
exec python3 scripts/colocate.py --build "$build" --out "$out" "$@"

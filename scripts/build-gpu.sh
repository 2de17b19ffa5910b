#!/usr/bin/env bash
# Builds gpusleep, its tests and GPU programs with this machine's compiler (Release), for the
# scripts that run on a GPU machine. Uses .deps (scripts/stage-deps.sh) when present.
#   scripts/build-gpu.sh BUILD_DIR LOG_FILE     exits 1 (with the log's tail) on failure
set -uo pipefail
cd "$(dirname "$0")/.."
build=$1
log=$2
cmake_args=(-DCMAKE_BUILD_TYPE=Release "-DPython3_EXECUTABLE=$(command -v python3)")
[ -d .deps ] && cmake_args+=("-DCMAKE_PREFIX_PATH=$PWD/.deps")
command -v ninja >/dev/null && cmake_args+=(-G Ninja)
if ! { cmake -S . -B "$build" "${cmake_args[@]}" && cmake --build "$build" -j "$(nproc)"; } \
    >"$log" 2>&1; then
  tail -40 "$log"
  echo "BUILD FAILED"
  exit 1
fi

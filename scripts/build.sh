#!/usr/bin/env bash
# Sets up what is missing (scripts/setup.sh) and configures and builds gpusleep into
# ${BUILD_DIR:-build}. Extra arguments go to CMake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build=${BUILD_DIR:-build}
args=()
[ -d .deps ] && args+=("-DCMAKE_PREFIX_PATH=$PWD/.deps")
[ -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc >/dev/null && export PATH=/usr/local/cuda/bin:$PATH
cmake -S . -B "$build" "${args[@]}" "$@"
cmake --build "$build" -j "$(nproc)"

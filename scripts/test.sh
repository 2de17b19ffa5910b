#!/usr/bin/env bash
# Sets up what is missing, builds gpusleep, and runs every test this machine can run: unit and
# emulated end-to-end tests everywhere, GPU tests (label `gpu`) where there is a GPU (elsewhere
# they report "skipped").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build=${BUILD_DIR:-build}
args=()
[ -d .deps ] && args+=("-DCMAKE_PREFIX_PATH=$PWD/.deps")
[ -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc >/dev/null && export PATH=/usr/local/cuda/bin:$PATH
cmake -S . -B "$build" "${args[@]}"
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" --timeout 300

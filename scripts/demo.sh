#!/usr/bin/env bash
# Sets up what is missing, builds gpusleep, and shows it at work: an unmodified CUDA program is
# started under the library, put to sleep and woken from another process, and checks its data.
# On a machine without a GPU the same flow runs on the emulated driver, and the demo says so.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build=${BUILD_DIR:-build}
args=()
[ -d .deps ] && args+=("-DCMAKE_PREFIX_PATH=$PWD/.deps")
[ -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc >/dev/null && export PATH=/usr/local/cuda/bin:$PATH
cmake -S . -B "$build" "${args[@]}" >/dev/null
cmake --build "$build" -j "$(nproc)" >/dev/null
python3 scripts/demo.py --build "$build" "$@"

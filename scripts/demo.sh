#!/usr/bin/env bash
# Sets up what is missing, builds gpusleep, and shows it at work: an unmodified CUDA program is
# started under the library, put to sleep and woken from another process, and checks its data.
# On a machine without a GPU the same flow runs on the emulated driver, and the demo says so.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh >/dev/null
python3 scripts/demo.py --build "${BUILD_DIR:-build}" "$@"

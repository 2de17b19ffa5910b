#!/usr/bin/env bash
# Sets up what is missing, builds gpusleep, and runs every test this machine can run: unit and
# emulated end-to-end tests everywhere (tests/ray on a Ray cluster of this machine: Ray is
# installed by scripts/setup-ray.sh), GPU tests (label `gpu`) where there is a GPU (elsewhere
# they report "skipped"), then the wheel built and tested installed in a fresh virtual
# environment (scripts/test-wheel.sh; WHEEL=0 skips it), then a bounded fuzz run of the control
# protocol (scripts/fuzz.sh; FUZZ_SECONDS, default 60; 0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
scripts/setup-ray.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" --timeout 300
if [ "${WHEEL:-1}" != 0 ]; then
  scripts/test-wheel.sh
fi
if [ "${FUZZ_SECONDS:-60}" != 0 ]; then
  scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
fi

#!/usr/bin/env bash
# Sets up what is missing, builds gpusleep, and shows it at work: an unmodified CUDA program is
# started under the library, put to sleep and woken from another process, and checks its data.
# On a machine without a GPU the same flow runs on the emulated driver, and the demo says so.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
mkdir -p "$build"
log="$build/demo-build.log"
echo "== gpusleep demo =="
echo "First, building gpusleep: scripts/build.sh installs what is missing (a compiler, CMake, the"
echo "JSON, test and command-line libraries), then compiles the library, the gpusleep command and"
echo "the programs the demo runs. The first build takes a few minutes; later runs only rebuild"
echo "what changed. The compiler's output goes to $log."
start=$(date +%s)
scripts/build.sh >"$log" 2>&1 &
builder=$!
ticks=0
while kill -0 "$builder" 2>/dev/null; do
  sleep 1
  ticks=$((ticks + 1))
  if [ $((ticks % 15)) -eq 0 ]; then
    step=$(grep -o '^\[ *[0-9]*%\]' "$log" | tail -1 || true)
    echo "  still building: $(($(date +%s) - start)) s so far${step:+, $step of the build done}"
  fi
done
if ! wait "$builder"; then
  echo "The build failed; the end of $log:"
  tail -n 30 "$log"
  exit 1
fi
echo "Built in $(($(date +%s) - start)) s."
python3 scripts/demo.py --build "$build" "$@"

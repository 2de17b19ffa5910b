#!/usr/bin/env bash
# Builds the libFuzzer target over the control protocol and handlers (clang, with
# AddressSanitizer and UndefinedBehaviorSanitizer) and runs it for a bounded time from the seed
# corpus in tests/fuzz/corpus. Exits non-zero on any crash, leak or sanitizer report.
#   scripts/fuzz.sh [SECONDS]   (default 60; FUZZ_BUILD_DIR, default build-fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
build=${FUZZ_BUILD_DIR:-build-fuzz}
if ! command -v clang++ >/dev/null; then
  echo "installing clang for the fuzz target"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq clang >/dev/null
fi
mkdir -p "$build"
log="$build/fuzz-build.log"
cmake -S . -B "$build" -DGPUSLEEP_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >"$log" 2>&1 || {
  tail -30 "$log"; exit 1; }
cmake --build "$build" -j "$(nproc)" --target fuzz_control >>"$log" 2>&1 || {
  tail -30 "$log"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp tests/fuzz/corpus/* "$work/"
export GPUSLEEP_LOG_LEVEL=off
"$build/tests/fuzz/fuzz_control" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
  -max_len=4096 -print_final_stats=1 "$work" 2>&1 | tail -12
echo "FUZZ: PASSED ($seconds s)"

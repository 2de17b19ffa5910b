#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, with AddressSanitizer and UndefinedBehaviorSanitizer) and
# runs each for a share of a bounded time: fuzz_control (request bytes, seeds in
# tests/fuzz/corpus), fuzz_requests (requests generated from a grammar) and fuzz_rules (rule sets
# and patterns, a match slower than its bound fails; seeds in tests/fuzz/corpus_rules). Exits
# non-zero on any crash, leak, timeout or sanitizer report.
#   scripts/fuzz.sh [SECONDS]   (default 60, in all; FUZZ_BUILD_DIR, default build-fuzz)
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
cmake --build "$build" -j "$(nproc)" --target fuzz_control fuzz_requests fuzz_rules >>"$log" 2>&1 || {
  tail -30 "$log"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GPUSLEEP_LOG_LEVEL=off
share=$(( seconds / 3 > 5 ? seconds / 3 : 5 ))
# run TARGET CORPUS: one bounded run from a copy of the seed corpus (empty: none).
run() {
  mkdir -p "$work/$1"
  [ -n "$2" ] && cp "$2"/* "$work/$1/"
  "$build/tests/fuzz/$1" -max_total_time="$share" -timeout=10 -rss_limit_mb=4096 \
    -max_len=4096 -print_final_stats=1 "$work/$1" >"$work/$1.log" 2>&1 || {
    tail -40 "$work/$1.log"; echo "FUZZ: $1 FAILED"; exit 1; }
  tail -3 "$work/$1.log"
}
run fuzz_control tests/fuzz/corpus
run fuzz_requests ""
run fuzz_rules tests/fuzz/corpus_rules
echo "FUZZ: PASSED ($seconds s)"

#!/usr/bin/env bash
# Installs what building and testing gpusleep needs and is missing: a C++20 compiler, CMake,
# nlohmann/json, Catch2 (v2 or v3), CLI11 (the command line's parser), Python 3 with venv (the
# wheel is built and tested in virtual environments, where scripts/build-wheel.sh installs
# scikit-build-core with pip), and objdump. The CUDA Toolkit (headers, nvcc) must already be
# there: gpusleep builds against it on machines without a GPU.
set -euo pipefail

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || command -v ninja >/dev/null || need+=(make)
command -v python3 >/dev/null || need+=(python3)
python3 -c "import ensurepip, venv" 2>/dev/null || need+=(python3-venv)
command -v objdump >/dev/null || need+=(binutils)
[ -f /usr/include/nlohmann/json.hpp ] || [ -d .deps/include/nlohmann ] || need+=(nlohmann-json3-dev)
[ -d /usr/include/catch2 ] || [ -d .deps/include/catch2 ] || need+=(catch2)
[ -f /usr/include/CLI/CLI.hpp ] || [ -f .deps/include/CLI/CLI.hpp ] || need+=(libcli11-dev)

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -f /usr/local/cuda/include/cuda.h ] && ! command -v nvcc >/dev/null; then
  echo "the CUDA Toolkit was not found (no /usr/local/cuda/include/cuda.h, no nvcc):" >&2
  echo "install it, or set CUDAToolkit_ROOT, then run this again" >&2
  exit 1
fi
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "note: nvcc is not on PATH; add /usr/local/cuda/bin to build the GPU test programs"
fi

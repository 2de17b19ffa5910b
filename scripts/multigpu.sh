#!/usr/bin/env bash
# Builds gpusleep with this machine's compiler and runs the multi-GPU checks (scripts/multigpu.py)
# on its GPUs: a tensor-parallel program with an NCCL all-reduce in a CUDA graph, one process per
# GPU, slept and woken together; and one process using two GPUs through peer access. JSON in
# $OUT (default multigpu-results/). NVLink multicast stays off.
#   scripts/multigpu.sh [--cycles 3] [--kv-gib 4]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/multigpu-results}
build=${BUILD_DIR:-build-gpu}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
scripts/build-gpu.sh "$build" "$out/build.log" || exit 1
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "$out/gpus.txt"
exec python3 scripts/multigpu.py --build "$build" --out "$out" "$@"

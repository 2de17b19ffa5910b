// Shared by the GPU test and benchmark programs: error checking, and buffers filled with (and
// checked against) a formula of their index, so that any lost or moved byte shows.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#define CHECK(x)                                                                 \
  do {                                                                           \
    cudaError_t e_ = (x);                                                        \
    if (e_ != cudaSuccess) {                                                     \
      std::printf("ERR %s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::fflush(stdout);                                                       \
      std::exit(1);                                                              \
    }                                                                            \
  } while (0)

__host__ __device__ inline std::uint64_t value_at(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t z = seed + i * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// p[i] = value_at(seed, base + i)
static __global__ void fill(std::uint64_t* p, std::size_t n, std::uint64_t seed,
                            std::uint64_t base) {
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    p[i] = value_at(seed, base + i);
  }
}

// Adds to *bad the number of i with p[i] != value_at(seed, base + i).
static __global__ void count_mismatches(const std::uint64_t* p, std::size_t n, std::uint64_t seed,
                                        std::uint64_t base, unsigned long long* bad) {
  unsigned long long local = 0;
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    local += p[i] != value_at(seed, base + i);
  }
  if (local) atomicAdd(bad, local);
}

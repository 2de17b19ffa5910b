// Allocation latency and kernel bandwidth, to compare plain runs with runs under gpusleep. Prints
// one line: RESULT {json} with the median cudaMalloc and cudaFree times per size (microseconds),
// once freeing each allocation before the next ("malloc_us", "free_us") and once holding several
// before freeing them ("held_malloc_us", "held_free_us"), and the bandwidth of a streaming kernel
// over cudaMalloc'd memory (GB/s, bytes read + written).
#include <cuda_runtime.h>

#include "patterns.cuh"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

__global__ void stream(const uint4* __restrict__ a, uint4* __restrict__ b, std::size_t n) {
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    uint4 v = a[i];
    b[i] = make_uint4(v.x * 3 + 1, v.y ^ 0x5a5a5a5a, v.z + 7, v.w);
  }
}

static double now_us() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main() {
  CHECK(cudaFree(nullptr));
  std::printf("RESULT {\"alloc\": [");
  const std::size_t sizes_mib[] = {2, 8, 64, 256, 1024};
  bool first = true;
  for (std::size_t mib : sizes_mib) {
    const std::size_t bytes = mib << 20;
    const int reps = mib >= 1024 ? 40 : 100;
    std::vector<double> alloc_us, free_us;
    for (int r = 0; r < reps + 3; ++r) {
      void* p = nullptr;
      double t0 = now_us();
      CHECK(cudaMalloc(&p, bytes));
      double t1 = now_us();
      CHECK(cudaFree(p));
      double t2 = now_us();
      if (r >= 3) {
        alloc_us.push_back(t1 - t0);
        free_us.push_back(t2 - t1);
      }
    }
    // Held: `held` allocations of the size are made, then all freed, so no allocation can reuse
    // the memory the previous free returned (a program growing its pool does this).
    const int held = mib >= 1024 ? 8 : 16;
    std::vector<double> held_alloc_us, held_free_us;
    std::vector<void*> ptrs(held);
    for (int round = 0; round < 7; ++round) {
      for (auto& p : ptrs) {
        double t0 = now_us();
        CHECK(cudaMalloc(&p, bytes));
        if (round > 0) held_alloc_us.push_back(now_us() - t0);
      }
      for (auto p : ptrs) {
        double t0 = now_us();
        CHECK(cudaFree(p));
        if (round > 0) held_free_us.push_back(now_us() - t0);
      }
    }
    std::printf(
        "%s{\"mib\": %zu, \"malloc_us\": %.1f, \"free_us\": %.1f, "
        "\"held_malloc_us\": %.1f, \"held_free_us\": %.1f}",
        first ? "" : ", ", mib, median(alloc_us), median(free_us), median(held_alloc_us),
        median(held_free_us));
    first = false;
  }

  const std::size_t bytes = std::size_t{2} << 30;
  const std::size_t n = bytes / sizeof(uint4);
  uint4 *a = nullptr, *b = nullptr;
  CHECK(cudaMalloc(&a, bytes));
  CHECK(cudaMalloc(&b, bytes));
  CHECK(cudaMemset(a, 0x3c, bytes));
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  std::vector<double> gbps;
  for (int r = 0; r < 23; ++r) {
    CHECK(cudaEventRecord(e0));
    stream<<<132 * 8, 256>>>(a, b, n);
    CHECK(cudaEventRecord(e1));
    CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    if (r >= 3) gbps.push_back(2.0 * bytes / (ms * 1e-3) / 1e9);
  }
  CHECK(cudaGetLastError());
  std::printf("], \"kernel_gbps\": %.1f}\n", median(gbps));
  return 0;
}

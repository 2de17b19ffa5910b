// The benchmark's host program, unaware of gpusleep. It first measures the pinned copy line rate
// of this machine (host memory from cudaHostAlloc, 4 streams, 64 MiB chunks), then allocates
// --gib GiB, fills it by kernel and waits for commands. The allocations are --regions equal ones,
// or with --mix N, N small ones (2 to 8 MiB) and then larger ones (256 MiB to 4 GiB).
//   verify   check every byte against its formula: "OK verify match" or "OK verify mismatch:N"
//   line     measure the line rate again: "LINE d2h_gbps=D h2d_gbps=H"
//   freeall  cudaFree everything
//   exit
#include <cuda_runtime.h>

#include "patterns.cuh"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median GB/s of `reps` transfers of `total` bytes through a pinned buffer of `window` bytes.
static double line_rate(bool to_host, char* dev, char* host, std::size_t total, std::size_t window,
                        cudaStream_t* streams, int nstreams, int reps) {
  const std::size_t chunk = 64u << 20;
  std::vector<double> rates;
  for (int r = 0; r < reps; ++r) {
    CHECK(cudaDeviceSynchronize());
    double t = now();
    for (std::size_t off = 0, i = 0; off < total; off += chunk, ++i) {
      std::size_t n = std::min(chunk, total - off);
      char* h = host + (off % window);
      cudaStream_t s = streams[i % nstreams];
      if (to_host)
        CHECK(cudaMemcpyAsync(h, dev + off, n, cudaMemcpyDeviceToHost, s));
      else
        CHECK(cudaMemcpyAsync(dev + off, h, n, cudaMemcpyHostToDevice, s));
    }
    CHECK(cudaDeviceSynchronize());
    rates.push_back(total / (now() - t) / 1e9);
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

int main(int argc, char** argv) {
  double gib = 16;
  int regions = 8;
  int mix = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--gib")) gib = std::atof(argv[i + 1]);
    if (!std::strcmp(argv[i], "--regions")) regions = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--mix")) mix = std::atoi(argv[i + 1]);
  }
  const int grid = 1056, block = 256;

  // The line rate: 4 GiB each way through a 1 GiB pinned window, the window and streams kept for
  // the "line" command, the device buffer made for each measurement and freed after it.
  const std::size_t line_total = std::size_t{4} << 30, line_window = std::size_t{1} << 30;
  char* line_host = nullptr;
  CHECK(cudaHostAlloc(&line_host, line_window, cudaHostAllocDefault));
  std::memset(line_host, 1, line_window);
  cudaStream_t line_streams[4];
  for (auto& s : line_streams)
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  auto measure_line = [&] {
    char* dev = nullptr;
    CHECK(cudaMalloc(&dev, line_total));
    line_rate(true, dev, line_host, line_total, line_window, line_streams, 4, 1);  // warm-up
    double d2h = line_rate(true, dev, line_host, line_total, line_window, line_streams, 4, 5);
    double h2d = line_rate(false, dev, line_host, line_total, line_window, line_streams, 4, 5);
    CHECK(cudaFree(dev));
    std::printf("LINE d2h_gbps=%.2f h2d_gbps=%.2f\n", d2h, h2d);
    std::fflush(stdout);
  };
  measure_line();

  const std::size_t total = static_cast<std::size_t>(gib * (1ull << 30));
  const std::size_t MiB = std::size_t{1} << 20;
  std::vector<std::size_t> sizes;
  if (mix > 0) {
    std::uint64_t rng = 12345;
    std::size_t sum = 0;
    for (int i = 0; i < mix; ++i) {
      rng = rng * 6364136223846793005ull + 1442695040888963407ull;
      sizes.push_back(((rng >> 33) % 4 + 1) * 2 * MiB);
      sum += sizes.back();
    }
    const std::size_t big[] = {4096 * MiB, 1024 * MiB, 256 * MiB, 2048 * MiB, 512 * MiB};
    for (int k = 0; sum < total; ++k) {
      std::size_t s = std::min(big[k % 5], (total - sum) / (2 * MiB) * (2 * MiB));
      if (s == 0) break;
      sizes.push_back(s);
      sum += s;
    }
  } else {
    for (int r = 0; r < regions; ++r)
      sizes.push_back(total / regions / 8 * 8);
  }
  const int nregions = static_cast<int>(sizes.size());
  std::vector<std::uint64_t*> bufs(nregions);
  std::size_t allocated = 0;
  for (int r = 0; r < nregions; ++r) {
    CHECK(cudaMalloc(&bufs[r], sizes[r]));
    fill<<<grid, block>>>(bufs[r], sizes[r] / 8, 1000 + r, 0);
    allocated += sizes[r];
  }
  unsigned long long* bad_dev = nullptr;
  CHECK(cudaMalloc(&bad_dev, sizeof(unsigned long long)));
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  std::printf("READY bytes=%zu regions=%d\n", allocated, nregions);
  std::fflush(stdout);

  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "exit") {
      std::printf("OK exit\n");
      return 0;
    }
    if (line == "freeall") {
      for (auto* p : bufs)
        CHECK(cudaFree(p));
      CHECK(cudaFree(bad_dev));
      bad_dev = nullptr;
      bufs.clear();
      sizes.clear();
      std::printf("OK freeall\n");
      std::fflush(stdout);
      continue;
    }
    if (line == "line") {
      measure_line();
      continue;
    }
    if (line != "verify") {
      std::printf("ERR unknown command\n");
      std::fflush(stdout);
      continue;
    }
    unsigned long long bad = 0;
    for (std::size_t r = 0; r < bufs.size(); ++r) {
      CHECK(cudaMemset(bad_dev, 0, sizeof bad));
      count_mismatches<<<grid, block>>>(bufs[r], sizes[r] / 8, 1000 + r, 0, bad_dev);
      unsigned long long b = 0;
      CHECK(cudaMemcpy(&b, bad_dev, sizeof b, cudaMemcpyDeviceToHost));
      bad += b;
    }
    if (bad == 0)
      std::printf("OK verify match\n");
    else
      std::printf("OK verify mismatch:%llu\n", bad);
    std::fflush(stdout);
  }
  return 0;
}

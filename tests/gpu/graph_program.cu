// A CUDA program that knows nothing of gpusleep: it allocates with cudaMalloc, fills buffers by
// kernel, captures a CUDA graph over them and replays it. It is built twice: with the dynamic
// runtime, and with nvcc's default static runtime (which reaches the driver only through
// cuGetProcAddress). The GPU test drives it over stdin:
//   verify   check every input element against its formula and replay the graph into a cleared
//            output: "OK verify inputs=match|mismatch:N graph=match|differs"
//   ipc      cudaIpcGetMemHandle on its first buffer: "OK ipc <error name>"
//   exit
// Arguments: --mib N (size of each of the two inputs, default 1024), --chunks K (each input is K
// separate allocations, default 1; the output is the size of one chunk).
#include <cuda_runtime.h>

#include "patterns.cuh"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

__global__ void combine(std::uint64_t* out, const std::uint64_t* a, const std::uint64_t* b,
                        std::size_t n) {
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    out[i] = a[i] * 31 + (b[i] ^ (b[i] >> 7));
  }
}

__global__ void checksum(const std::uint64_t* p, std::size_t n, unsigned long long* sum) {
  unsigned long long local = 0;
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    local += p[i] * (i | 1);
  }
  atomicAdd(sum, local);
}

struct Input {
  std::vector<std::uint64_t*> chunks;
  std::size_t words_per_chunk;
  std::uint64_t seed;
};

int main(int argc, char** argv) {
  std::size_t mib = 1024;
  int chunks = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--mib")) mib = std::strtoull(argv[i + 1], nullptr, 10);
    if (!std::strcmp(argv[i], "--chunks")) chunks = std::atoi(argv[i + 1]);
  }
  const std::size_t bytes = mib << 20;
  const std::size_t words = bytes / 8;
  const int grid = 1056, block = 256;

  // Inputs: each made of `chunks` allocations, filled by kernel.
  Input inputs[2] = {{{}, words / chunks, 11}, {{}, words / chunks, 22}};
  for (Input& in : inputs) {
    for (int c = 0; c < chunks; ++c) {
      std::uint64_t* p = nullptr;
      CHECK(cudaMalloc(&p, in.words_per_chunk * 8));
      fill<<<grid, block>>>(p, in.words_per_chunk, in.seed, c * in.words_per_chunk);
      in.chunks.push_back(p);
    }
  }
  const std::size_t n = inputs[0].words_per_chunk;  // the graph combines the first chunks
  std::uint64_t* out = nullptr;
  unsigned long long* sums = nullptr;  // [0]: checksum, [1]: mismatch count
  CHECK(cudaMalloc(&out, n * 8));
  CHECK(cudaMalloc(&sums, 2 * sizeof(unsigned long long)));
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());

  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  combine<<<grid, block, 0, stream>>>(out, inputs[0].chunks[0], inputs[1].chunks[0], n);
  CHECK(cudaMemsetAsync(sums, 0, sizeof(unsigned long long), stream));
  checksum<<<grid, block, 0, stream>>>(out, n, sums);
  CHECK(cudaStreamEndCapture(stream, &graph));
  CHECK(cudaGraphInstantiate(&exec, graph, 0));

  auto replay = [&]() {
    CHECK(cudaMemsetAsync(out, 0, n * 8, stream));
    CHECK(cudaGraphLaunch(exec, stream));
    CHECK(cudaStreamSynchronize(stream));
    unsigned long long sum = 0;
    CHECK(cudaMemcpy(&sum, sums, sizeof sum, cudaMemcpyDeviceToHost));
    return sum;
  };
  const unsigned long long reference = replay();
  std::printf("READY bytes=%zu checksum=%llu\n", 2 * bytes + n * 8 + 2 * sizeof(unsigned long long),
              reference);
  std::fflush(stdout);

  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "exit") {
      std::printf("OK exit\n");
      return 0;
    }
    if (line == "ipc") {  // legacy IPC on the program's own buffer
      cudaIpcMemHandle_t handle;
      cudaError_t e = cudaIpcGetMemHandle(&handle, inputs[0].chunks[0]);
      cudaGetLastError();
      std::printf("OK ipc %s\n", cudaGetErrorName(e));
      std::fflush(stdout);
      continue;
    }
    if (line != "verify") {
      std::printf("ERR unknown command\n");
      std::fflush(stdout);
      continue;
    }
    unsigned long long bad = 0;
    for (const Input& in : inputs) {
      for (std::size_t c = 0; c < in.chunks.size(); ++c) {
        CHECK(cudaMemset(sums + 1, 0, sizeof(unsigned long long)));
        count_mismatches<<<grid, block>>>(in.chunks[c], in.words_per_chunk, in.seed,
                                          c * in.words_per_chunk, sums + 1);
        CHECK(cudaGetLastError());
        unsigned long long chunk_bad = 0;
        CHECK(cudaMemcpy(&chunk_bad, sums + 1, sizeof chunk_bad, cudaMemcpyDeviceToHost));
        bad += chunk_bad;
      }
    }
    unsigned long long sum = replay();
    std::printf("OK verify inputs=%s graph=%s checksum=%llu\n",
                bad == 0 ? "match" : ("mismatch:" + std::to_string(bad)).c_str(),
                sum == reference ? "match" : "differs", sum);
    std::fflush(stdout);
  }
  return 0;
}

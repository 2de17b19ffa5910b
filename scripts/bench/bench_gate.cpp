// The cost of an intercepted GPU call while nothing is asleep. Calls cudaLaunchKernel and
// cuLaunchKernel of a stub library that does nothing, N times on each of T threads, and prints the
// nanoseconds per call. scripts/bench_gate.sh runs it bare and under LD_PRELOAD=libgpusleep.so:
// the difference is the library's overhead per call (the gate and the forwarding).
//   bench_gate CALLS THREADS
#include <cuda.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

template <typename Fn>
double ns_per_call(long calls, int threads, Fn fn) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> pool;
  std::vector<double> ns(threads);
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ++ready;
      while (!go)
        std::this_thread::yield();
      auto start = std::chrono::steady_clock::now();
      for (long i = 0; i < calls; ++i)
        fn();
      ns[t] = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start)
                  .count() /
              static_cast<double>(calls);
    });
  }
  while (ready < threads)
    std::this_thread::yield();
  go = true;
  for (auto& t : pool)
    t.join();
  double sum = 0;
  for (double v : ns)
    sum += v;
  return sum / threads;
}

}  // namespace

int main(int argc, char** argv) {
  const long calls = argc > 1 ? std::atol(argv[1]) : 20000000;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 1;
  static int kernel_stand_in;
  const void* func = &kernel_stand_in;
  double runtime = ns_per_call(calls, threads, [func] {
    if (cudaLaunchKernel(func, dim3(1), dim3(1), nullptr, 0, nullptr) != cudaSuccess) std::abort();
  });
  double driver = ns_per_call(calls, threads, [] {
    if (cuLaunchKernel(nullptr, 1, 1, 1, 1, 1, 1, 0, nullptr, nullptr, nullptr) != CUDA_SUCCESS)
      std::abort();
  });
  std::printf("{\"threads\": %d, \"calls\": %ld, \"runtime_ns\": %.3f, \"driver_ns\": %.3f}\n",
              threads, calls, runtime, driver);
  return 0;
}

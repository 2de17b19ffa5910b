// A host program for the emulated end-to-end tests, written like any CUDA program: it knows
// nothing of gpusleep and only calls the CUDA runtime. Its "kernels" are loops over device
// pointers, which the emulated driver backs with host memory. A test drives it over stdin:
//   alloc NAME BYTES SEED   cudaMalloc and fill with a pattern by "kernel"
//   check NAME              copy back with cudaMemcpy and compare with the pattern
//   zero NAME               copy back and report whether every byte is zero
//   compute OUT A B         OUT = f(A, B) by "kernel"; prints a checksum of OUT
//   launch OUT A B          the same computed by a kernel launched with cudaLaunchKernel (the
//                           emulated driver runs it: fakecuda.h); "ERR launch ERROR" if it fails
//   graph OUT A B           the same kernel launched as a graph (cudaGraphLaunch)
//   slow MS                 launch a kernel that runs for MS milliseconds
//   lost                    whether the context was lost to a kernel fault: "OK lost yes|no"
//   touch NAME              read the buffer directly; reports a fault instead of dying of it
//   free NAME               cudaFree
//   fork                    fork a child that exits at once through exit() (atexit handlers
//                           and all), as a server's worker launcher might; "OK fork STATUS"
//   exit
// Each command answers one line: "OK ..." or "ERR ...". "READY" is printed first.
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fakecuda.h"

namespace {

struct Buffer {
  std::uint64_t* ptr;
  std::size_t bytes;
  std::uint64_t seed;
};

std::map<std::string, Buffer> g_buffers;
sigjmp_buf g_jump;
volatile sig_atomic_t g_touching = 0;

std::uint64_t pattern(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t z = seed + i * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void on_fault(int sig) {
  if (g_touching) siglongjmp(g_jump, sig);
  signal(sig, SIG_DFL);
  raise(sig);
}

void reply(const std::string& line) {
  std::cout << line << std::endl;
}

bool lookup(const std::string& name, Buffer* out) {
  auto it = g_buffers.find(name);
  if (it == g_buffers.end()) {
    reply("ERR no buffer " + name);
    return false;
  }
  *out = it->second;
  return true;
}

void do_alloc(std::istringstream& in) {
  std::string name;
  std::size_t bytes = 0;
  std::uint64_t seed = 0;
  in >> name >> bytes >> seed;
  void* p = nullptr;
  cudaError_t rc = cudaMalloc(&p, bytes);
  if (rc != cudaSuccess) {
    reply(std::string("ERR alloc ") + cudaGetErrorName(rc));
    return;
  }
  auto* words = static_cast<std::uint64_t*>(p);
  for (std::size_t i = 0; i < bytes / 8; ++i)
    words[i] = pattern(seed, i);
  g_buffers[name] = Buffer{words, bytes, seed};
  char addr[32];
  std::snprintf(addr, sizeof addr, "0x%llx",
                static_cast<unsigned long long>(reinterpret_cast<std::uintptr_t>(p)));
  reply("OK alloc " + name + " " + addr);
}

bool copy_back(const Buffer& b, std::vector<std::uint64_t>* host) {
  host->resize(b.bytes / 8);
  cudaError_t rc = cudaMemcpy(host->data(), b.ptr, b.bytes, cudaMemcpyDeviceToHost);
  if (rc != cudaSuccess) {
    reply(std::string("ERR memcpy ") + cudaGetErrorName(rc));
    return false;
  }
  return true;
}

void do_check(const std::string& name) {
  Buffer b;
  std::vector<std::uint64_t> host;
  if (!lookup(name, &b) || !copy_back(b, &host)) return;
  for (std::size_t i = 0; i < host.size(); ++i) {
    if (host[i] != pattern(b.seed, i)) {
      reply("OK check " + name + " mismatch " + std::to_string(i * 8));
      return;
    }
  }
  reply("OK check " + name + " match");
}

void do_zero(const std::string& name) {
  Buffer b;
  std::vector<std::uint64_t> host;
  if (!lookup(name, &b) || !copy_back(b, &host)) return;
  for (std::uint64_t w : host) {
    if (w != 0) {
      reply("OK zero " + name + " no");
      return;
    }
  }
  reply("OK zero " + name + " yes");
}

void do_compute(std::istringstream& in) {
  std::string out, a, b;
  in >> out >> a >> b;
  Buffer o, x, y;
  if (!lookup(out, &o) || !lookup(a, &x) || !lookup(b, &y)) return;
  std::size_t n = std::min({o.bytes, x.bytes, y.bytes}) / 8;
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    o.ptr[i] = x.ptr[i] * 31 + (y.ptr[i] ^ (y.ptr[i] >> 7));
    sum += o.ptr[i] * (i | 1);
  }
  reply("OK compute " + std::to_string(sum));
}

// Kernels of the emulated driver: host functions over device memory, given their parameters as
// cudaLaunchKernel passes them (an array of pointers to each argument).
struct ComputeArgs {
  std::uint64_t* out;
  const std::uint64_t* a;
  const std::uint64_t* b;
  std::size_t n;
  std::uint64_t* sum;  // host memory: the result reaches the program
};

void compute_kernel(void** params) {
  const ComputeArgs& c = **static_cast<ComputeArgs**>(params[0]);
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < c.n; ++i) {
    c.out[i] = c.a[i] * 31 + (c.b[i] ^ (c.b[i] >> 7));
    sum += c.out[i] * (i | 1);
  }
  *c.sum = sum;
}

void slow_kernel(void** params) {
  std::this_thread::sleep_for(std::chrono::milliseconds(**static_cast<int**>(params[0])));
}

void do_launch(const std::string& how, std::istringstream& in) {
  std::string out, a, b;
  in >> out >> a >> b;
  Buffer o, x, y;
  if (!lookup(out, &o) || !lookup(a, &x) || !lookup(b, &y)) return;
  std::uint64_t sum = 0;
  ComputeArgs args{o.ptr, x.ptr, y.ptr, std::min({o.bytes, x.bytes, y.bytes}) / 8, &sum};
  ComputeArgs* argp = &args;
  void* params[] = {&argp};
  cudaError_t rc;
  if (how == "graph") {
    fakecuda_graph graph{&compute_kernel, params};
    rc = cudaGraphLaunch(reinterpret_cast<cudaGraphExec_t>(&graph), nullptr);
  } else {
    rc = cudaLaunchKernel(reinterpret_cast<const void*>(&compute_kernel), dim3(1), dim3(1), params,
                          0, nullptr);
  }
  if (rc != cudaSuccess) {
    reply("ERR " + how + " " + cudaGetErrorName(rc));
    return;
  }
  reply("OK " + how + " " + std::to_string(sum));
}

void do_slow(std::istringstream& in) {
  int ms = 0;
  in >> ms;
  int* msp = &ms;
  void* params[] = {&msp};
  cudaError_t rc = cudaLaunchKernel(reinterpret_cast<const void*>(&slow_kernel), dim3(1), dim3(1),
                                    params, 0, nullptr);
  reply(rc == cudaSuccess ? "OK slow" : std::string("ERR slow ") + cudaGetErrorName(rc));
}

void do_lost() {
  void* cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  auto lost =
      cuda != nullptr ? reinterpret_cast<int (*)()>(dlsym(cuda, "fakecuda_context_lost")) : nullptr;
  if (lost == nullptr) {
    reply("ERR lost: not the emulated driver");
    return;
  }
  reply(std::string("OK lost ") + (lost() ? "yes" : "no"));
}

void do_touch(const std::string& name) {
  Buffer b;
  if (!lookup(name, &b)) return;
  g_touching = 1;
  if (sigsetjmp(g_jump, 1) != 0) {
    g_touching = 0;
    reply("OK touch " + name + " fault");
    return;
  }
  volatile std::uint64_t v = b.ptr[0];
  g_touching = 0;
  reply("OK touch " + name + " read " + std::to_string(v));
}

void do_free(const std::string& name) {
  Buffer b;
  if (!lookup(name, &b)) return;
  cudaError_t rc = cudaFree(b.ptr);
  g_buffers.erase(name);
  reply(std::string("OK free ") + name + " " + cudaGetErrorName(rc));
}

}  // namespace

int main() {
  struct sigaction sa {};
  sa.sa_handler = on_fault;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, nullptr);
  sigaction(SIGBUS, &sa, nullptr);
  reply("READY");
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd, name;
    in >> cmd;
    if (cmd == "alloc") {
      do_alloc(in);
    } else if (cmd == "compute") {
      do_compute(in);
    } else if (cmd == "launch" || cmd == "graph") {
      do_launch(cmd, in);
    } else if (cmd == "slow") {
      do_slow(in);
    } else if (cmd == "lost") {
      do_lost();
    } else if (cmd == "exit") {
      reply("OK exit");
      return 0;
    } else if (cmd == "fork") {
      std::cout.flush();
      pid_t child = fork();
      if (child == 0) std::exit(0);
      int status = 0;
      waitpid(child, &status, 0);
      reply("OK fork " + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1));
    } else {
      in >> name;
      if (cmd == "check")
        do_check(name);
      else if (cmd == "zero")
        do_zero(name);
      else if (cmd == "touch")
        do_touch(name);
      else if (cmd == "free")
        do_free(name);
      else
        reply("ERR unknown command " + cmd);
    }
  }
  return 0;
}

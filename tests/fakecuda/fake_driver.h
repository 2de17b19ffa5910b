// Internal to the emulated driver (libcuda.so.1 of the tests): the state its files share, the
// checks every entry point makes, and the entry points named only in its table. Nothing outside
// tests/fakecuda includes it.
#pragma once

#include <cuda.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "fakecuda.h"

#pragma GCC visibility push(hidden)
namespace fakecuda {

constexpr std::size_t kGranularity = std::size_t{2} << 20;
constexpr int kMaxDevices = 8;
constexpr std::uint64_t kMagic = 0x66616b6563756461ull;

struct Shared {
  std::uint64_t magic;
  std::uint32_t devices;
  std::uint32_t pad;
  std::uint64_t capacity[kMaxDevices];
  std::atomic<std::uint64_t> used[kMaxDevices];
};

struct Ctx {
  int device;
};

struct Phys {
  int fd;
  std::size_t size;
  int device;
  int mappings;
  int refs;  // handle references: cuMemCreate, cuMemRetainAllocationHandle, less cuMemRelease
};

struct Mapping {
  std::size_t size;
  std::uint64_t handle;
  int prot;
  unsigned access;  // bit d: device d may read and write it (cuMemSetAccess)
};

struct Plain {
  std::size_t size;
  std::size_t charged;
  int device;
  bool async;  // from a stream-ordered allocation
};

struct Fault {
  int skip;
  int count;
  CUresult error;
};

struct State {
  std::mutex mu;
  bool initialized = false;
  Shared* shared = nullptr;
  bool vmm = true;
  Ctx contexts[kMaxDevices];
  std::map<std::uint64_t, Phys> phys;
  std::uint64_t next_handle = 1;
  std::map<std::uintptr_t, std::size_t> reservations;
  std::map<std::uintptr_t, Mapping> mappings;
  std::map<std::uintptr_t, Plain> plain;
  std::map<std::uintptr_t, std::size_t> registrations;
  std::map<std::string, Fault> faults;
  FakeCudaStats stats{};
  std::atomic<unsigned> copy_delay_us{0};
  std::uint64_t held[kMaxDevices] = {};  // capacity this process holds, returned at exit
  bool capturing = false;                // an emulated global-mode stream capture is under way
  bool capture_valid = true;
  bool peer[kMaxDevices][kMaxDevices] = {};  // [accessor][owner]: cuCtxEnablePeerAccess done
};

// The process's state; every field is guarded by `mu` unless it says otherwise.
State& st();

extern thread_local constinit Ctx* t_current;
extern thread_local constinit Ctx* t_stack[16];  // cuCtxPushCurrent's stack below t_current
extern thread_local constinit int t_depth;
extern thread_local constinit CUstreamCaptureMode t_capture_mode;
// Set for good once a kernel faulted: the process's contexts are lost.
extern std::atomic<bool> g_context_lost;

// A potentially unsafe call during another thread's global-mode capture. Caller holds the lock.
CUresult capture_check(bool always_conflicts);
// The unsigned value of environment variable `name`, or `fallback` when unset or empty.
std::uint64_t env_u64(const char* name, std::uint64_t fallback);
// The device table shared by the processes of FAKECUDA_STATE (or private); null on failure.
Shared* open_shared();
// Capacity bookkeeping: the device's memory is shared by every process of the state file.
// take() returns false, changing nothing, when `n` more bytes would exceed the capacity.
bool take(int device, std::size_t n);
void give(int device, std::size_t n);
// Checks an injected fault for `fn`. Caller holds the lock.
CUresult injected(const char* fn);
bool valid_device(int d);
// Whether [p, p+n) is device memory that can be read and written: inside one plain allocation,
// or covered by accessible mappings. Caller holds the lock.
bool device_range_ok(std::uintptr_t p, std::size_t n);
// Whether a kernel on `device` may access [p, p+n): the device owns the plain allocation or has
// peer access to its owner; every mapping covering the range grants `device` access.
bool device_can_access(int device, std::uintptr_t p, std::size_t n);
// Whether [p, p+n) lies in one host registration. Caller holds the lock.
bool host_registered(const void* p, std::size_t n);
// Closes a physical allocation and returns its capacity. Caller holds the lock.
void destroy_phys(std::map<std::uint64_t, Phys>::iterator it);
// Sleeps FAKECUDA_COPY_DELAY_US (or the test's delay) to make copies take time.
void copy_delay();
// memcpy after checking the context, the device range and counting pinned or pageable bytes.
CUresult copy_checked(void* dst, const void* src, std::size_t n, std::uintptr_t device_side,
                      const void* host_side);

}  // namespace fakecuda
#pragma GCC visibility pop

#define FAKE_ENTER(name)                                    \
  std::lock_guard<std::mutex> lock(st().mu);                \
  if (!st().initialized) return CUDA_ERROR_NOT_INITIALIZED; \
  if (CUresult injected_rc = injected(name)) return injected_rc

// For calls that run work in the context.
#define FAKE_ENTER_WORK(name) \
  FAKE_ENTER(name);           \
  if (g_context_lost.load()) return CUDA_ERROR_ILLEGAL_ADDRESS

// Entry points that cuda.h does not declare: older ABIs and per-thread-default-stream variants,
// reached through cuGetProcAddress.
extern "C" {
CUresult CUDAAPI fake_cuMemAlloc_v1(unsigned int* dptr, unsigned int size);
CUresult CUDAAPI fake_cuGetProcAddress_v1(const char* symbol, void** pfn, int version,
                                          cuuint64_t flags);
CUresult CUDAAPI cuMemAllocAsync_ptsz(CUdeviceptr* dptr, size_t size, CUstream s);
CUresult CUDAAPI cuMemAllocFromPoolAsync_ptsz(CUdeviceptr* dptr, size_t size, CUmemoryPool pool,
                                              CUstream s);
CUresult CUDAAPI cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream s);
CUresult CUDAAPI cuLaunchKernel_ptsz(CUfunction f, unsigned int, unsigned int, unsigned int,
                                     unsigned int, unsigned int, unsigned int, unsigned int,
                                     CUstream, void** params, void**);
CUresult CUDAAPI cuGraphLaunch_ptsz(CUgraphExec exec, CUstream);
}

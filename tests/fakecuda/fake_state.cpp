// An emulated CUDA driver that keeps "device" memory in host memory, faithful to the subset of
// the driver API that gpusleep and the emulated runtime use:
//  - an address reservation is an inaccessible anonymous mapping;
//  - physical memory is a memory file, counted against a per-device capacity shared by every
//    process that names the same FAKECUDA_STATE file (as processes share a GPU);
//  - mapping maps the file there, inaccessible until cuMemSetAccess; unmapping puts the
//    reservation back, so touching slept memory faults like an illegal address;
//  - copies are memcpy after checking that the device range is mapped and accessible;
//  - a kernel is a host function run by the launching thread on device memory directly: one that
//    touches memory not mapped there fails with CUDA_ERROR_ILLEGAL_ADDRESS and, as on a GPU,
//    loses the context, so every later call that uses it fails the same way.
// Rules the real driver enforces and gpusleep must respect are enforced here too: cuInit first,
// a current context for copies, streams, host registration and memory info, granularity-aligned
// sizes, unmap of exactly a mapped range, no double registration of host memory.
//
// Environment: FAKECUDA_DEVICES (1), FAKECUDA_MEMORY (bytes per device, 4 GiB),
// FAKECUDA_STATE (file shared between processes; default: private to the process),
// FAKECUDA_NO_VMM=1 (devices report no virtual memory management), FAKECUDA_COPY_DELAY_US.
//
// This file: the state shared by the API areas (fake_context.cpp, fake_memory.cpp,
// fake_launch.cpp, fake_entry_points.cpp) and the test controls of fakecuda.h.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "fake_driver.h"

namespace fakecuda {

State& st() {
  static State* s = new State();
  return *s;
}

thread_local constinit Ctx* t_current = nullptr;
thread_local constinit Ctx* t_stack[16] = {};  // cuCtxPushCurrent's stack below t_current
thread_local constinit int t_depth = 0;
thread_local constinit CUstreamCaptureMode t_capture_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;

// A potentially unsafe call during another thread's global-mode capture. Caller holds the lock.
CUresult capture_check(bool always_conflicts) {
  State& s = st();
  if (!s.capturing) return CUDA_SUCCESS;
  if (!always_conflicts && t_capture_mode == CU_STREAM_CAPTURE_MODE_RELAXED) return CUDA_SUCCESS;
  s.capture_valid = false;
  return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
}

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 0) : fallback;
}

Shared* open_shared() {
  int devices = static_cast<int>(env_u64("FAKECUDA_DEVICES", 1));
  if (devices < 1) devices = 1;
  if (devices > kMaxDevices) devices = kMaxDevices;
  std::uint64_t capacity = env_u64("FAKECUDA_MEMORY", std::uint64_t{4} << 30);
  const char* path = std::getenv("FAKECUDA_STATE");
  void* p = MAP_FAILED;
  if (path && *path) {
    int fd = ::open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
      ::flock(fd, LOCK_EX);
      struct stat sb;
      if (::fstat(fd, &sb) == 0 && sb.st_size < static_cast<off_t>(sizeof(Shared))) {
        if (::ftruncate(fd, sizeof(Shared)) != 0) {
          ::close(fd);
          return nullptr;
        }
      }
      p = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p != MAP_FAILED) {
        auto* s = static_cast<Shared*>(p);
        if (s->magic != kMagic) {
          s->devices = static_cast<std::uint32_t>(devices);
          for (int i = 0; i < kMaxDevices; ++i)
            s->capacity[i] = capacity;
          s->magic = kMagic;
        }
      }
      ::flock(fd, LOCK_UN);
      ::close(fd);
    }
  } else {
    p = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
      auto* s = static_cast<Shared*>(p);
      s->devices = static_cast<std::uint32_t>(devices);
      for (int i = 0; i < kMaxDevices; ++i)
        s->capacity[i] = capacity;
      s->magic = kMagic;
    }
  }
  return p == MAP_FAILED ? nullptr : static_cast<Shared*>(p);
}

// Capacity bookkeeping: the device's memory is shared by every process of the state file.
bool take(int device, std::size_t n) {
  State& s = st();
  auto& used = s.shared->used[device];
  std::uint64_t cur = used.load();
  do {
    if (cur + n > s.shared->capacity[device]) return false;
  } while (!used.compare_exchange_weak(cur, cur + n));
  s.held[device] += n;
  return true;
}

void give(int device, std::size_t n) {
  State& s = st();
  s.shared->used[device].fetch_sub(n);
  s.held[device] -= n;
}

__attribute__((destructor)) void return_capacity_at_exit() {
  State& s = st();
  if (s.shared == nullptr) return;
  for (int d = 0; d < kMaxDevices; ++d) {
    if (s.held[d] != 0) s.shared->used[d].fetch_sub(s.held[d]);
    s.held[d] = 0;
  }
}

// Checks an injected fault for `fn`. Caller holds the lock.
CUresult injected(const char* fn) {
  auto it = st().faults.find(fn);
  if (it == st().faults.end()) return CUDA_SUCCESS;
  Fault& f = it->second;
  if (f.skip > 0) {
    --f.skip;
    return CUDA_SUCCESS;
  }
  if (f.count <= 0) return CUDA_SUCCESS;
  --f.count;
  return f.error;
}

std::atomic<bool> g_context_lost{false};

bool valid_device(int d) {
  return d >= 0 && d < static_cast<int>(st().shared->devices);
}

// Whether [p, p+n) is device memory that can be read and written: inside one plain allocation,
// or covered by accessible mappings. Caller holds the lock.
bool device_range_ok(std::uintptr_t p, std::size_t n) {
  State& s = st();
  auto pl = s.plain.upper_bound(p);
  if (pl != s.plain.begin()) {
    --pl;
    if (p >= pl->first && p + n <= pl->first + pl->second.size) return true;
  }
  std::uintptr_t cur = p;
  const std::uintptr_t end = p + n;
  while (cur < end) {
    auto it = s.mappings.upper_bound(cur);
    if (it == s.mappings.begin()) return false;
    --it;
    if (cur >= it->first + it->second.size) return false;
    if (it->second.prot != (PROT_READ | PROT_WRITE)) return false;
    cur = it->first + it->second.size;
  }
  return n > 0;
}

// Whether a kernel on `device` may access [p, p+n): the device owns the plain allocation or has
// peer access to its owner; every mapping covering the range grants `device` access.
bool device_can_access(int device, std::uintptr_t p, std::size_t n) {
  State& s = st();
  auto pl = s.plain.upper_bound(p);
  if (pl != s.plain.begin()) {
    --pl;
    if (p >= pl->first && p + n <= pl->first + pl->second.size) {
      return pl->second.device == device || s.peer[device][pl->second.device];
    }
  }
  std::uintptr_t cur = p;
  while (cur < p + n) {
    auto it = s.mappings.upper_bound(cur);
    if (it == s.mappings.begin()) return false;
    --it;
    if (cur >= it->first + it->second.size) return false;
    if ((it->second.access & (1u << device)) == 0) return false;
    cur = it->first + it->second.size;
  }
  return n > 0;
}

bool host_registered(const void* p, std::size_t n) {
  auto a = reinterpret_cast<std::uintptr_t>(p);
  auto it = st().registrations.upper_bound(a);
  if (it == st().registrations.begin()) return false;
  --it;
  return a >= it->first && a + n <= it->first + it->second;
}

void destroy_phys(std::map<std::uint64_t, Phys>::iterator it) {
  ::close(it->second.fd);
  give(it->second.device, it->second.size);
  st().phys.erase(it);
}

void copy_delay() {
  unsigned us = st().copy_delay_us.load();
  if (us) std::this_thread::sleep_for(std::chrono::microseconds(us));
}

CUresult copy_checked(void* dst, const void* src, std::size_t n, std::uintptr_t device_side,
                      const void* host_side) {
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (n == 0) return CUDA_SUCCESS;
  if (!device_range_ok(device_side, n)) return CUDA_ERROR_INVALID_VALUE;
  (host_registered(host_side, n) ? st().stats.pinned_copy_bytes : st().stats.pageable_copy_bytes) +=
      n;
  std::memcpy(dst, src, n);
  return CUDA_SUCCESS;
}

}  // namespace fakecuda

using namespace fakecuda;

// ---- test controls ----

extern "C" int fakecuda_context_lost(void) {
  return g_context_lost.load() ? 1 : 0;
}

extern "C" void fakecuda_reset(void) {
  std::lock_guard<std::mutex> lock(st().mu);
  st().faults.clear();
  std::uint64_t registered = st().stats.registered_bytes;
  st().stats = FakeCudaStats{};
  st().stats.registered_bytes = registered;
  st().copy_delay_us = 0;
  g_context_lost.store(false);
}

extern "C" void fakecuda_get_stats(FakeCudaStats* out) {
  std::lock_guard<std::mutex> lock(st().mu);
  *out = st().stats;
}

extern "C" void fakecuda_fail(const char* function, int skip, int count, int error) {
  std::lock_guard<std::mutex> lock(st().mu);
  st().faults[function] = Fault{skip, count, static_cast<CUresult>(error)};
}

extern "C" uint64_t fakecuda_used_bytes(int device) {
  std::lock_guard<std::mutex> lock(st().mu);
  if (st().shared == nullptr || device < 0 || device >= kMaxDevices) return 0;
  return st().shared->used[device].load();
}

extern "C" uint64_t fakecuda_capacity_bytes(int device) {
  std::lock_guard<std::mutex> lock(st().mu);
  if (st().shared == nullptr || device < 0 || device >= kMaxDevices ||
      static_cast<std::uint32_t>(device) >= st().shared->devices) {
    return 0;  // no such device
  }
  return st().shared->capacity[device];
}

extern "C" void fakecuda_set_capacity(int device, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(st().mu);
  if (st().shared == nullptr || device < 0 || device >= kMaxDevices) return;
  st().shared->capacity[device] = bytes;
}

extern "C" void fakecuda_set_vmm(int supported) {
  std::lock_guard<std::mutex> lock(st().mu);
  st().vmm = supported != 0;
}

extern "C" void fakecuda_begin_capture(int global_mode) {
  std::lock_guard<std::mutex> lock(st().mu);
  st().capturing = global_mode != 0;
  st().capture_valid = true;
}

extern "C" int fakecuda_end_capture(void) {
  std::lock_guard<std::mutex> lock(st().mu);
  st().capturing = false;
  return st().capture_valid ? 1 : 0;
}

extern "C" void fakecuda_set_copy_delay_us(unsigned microseconds) {
  st().copy_delay_us = microseconds;
}

extern "C" int fakecuda_kernel_access(int device, uint64_t ptr, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(st().mu);
  if (!st().initialized || !valid_device(device)) return 0;
  return device_can_access(device, ptr, bytes) ? 1 : 0;
}

extern "C" int fakecuda_peer_enabled(int accessor, int owner) {
  std::lock_guard<std::mutex> lock(st().mu);
  if (!valid_device(accessor) || !valid_device(owner)) return 0;
  return st().peer[accessor][owner] ? 1 : 0;
}

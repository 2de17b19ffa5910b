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
#include <cuda.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "fakecuda.h"

namespace {

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

State& st() {
  static State* s = new State();
  return *s;
}

thread_local Ctx* t_current = nullptr;
thread_local Ctx* t_stack[16];  // cuCtxPushCurrent's stack below t_current
thread_local int t_depth = 0;
thread_local CUstreamCaptureMode t_capture_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;

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

// Set for good once a kernel faulted: the process's contexts are lost.
std::atomic<bool> g_context_lost{false};

#define FAKE_ENTER(name)                                    \
  std::lock_guard<std::mutex> lock(st().mu);                \
  if (!st().initialized) return CUDA_ERROR_NOT_INITIALIZED; \
  if (CUresult injected_rc = injected(name)) return injected_rc

// For calls that run work in the context.
#define FAKE_ENTER_WORK(name) \
  FAKE_ENTER(name);           \
  if (g_context_lost.load()) return CUDA_ERROR_ILLEGAL_ADDRESS

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

}  // namespace

// ---- initialization, devices, contexts ----

CUresult CUDAAPI cuInit(unsigned int flags) {
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard<std::mutex> lock(st().mu);
  if (st().initialized) return CUDA_SUCCESS;
  st().shared = open_shared();
  if (st().shared == nullptr) return CUDA_ERROR_NO_DEVICE;
  for (int i = 0; i < kMaxDevices; ++i)
    st().contexts[i].device = i;
  st().vmm = env_u64("FAKECUDA_NO_VMM", 0) == 0;
  st().copy_delay_us = static_cast<unsigned>(env_u64("FAKECUDA_COPY_DELAY_US", 0));
  st().initialized = true;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDriverGetVersion(int* version) {
  if (version == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *version = 13000;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetCount(int* count) {
  FAKE_ENTER("cuDeviceGetCount");
  if (count == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *count = static_cast<int>(st().shared->devices);
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGet(CUdevice* device, int ordinal) {
  FAKE_ENTER("cuDeviceGet");
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(ordinal)) return CUDA_ERROR_INVALID_DEVICE;
  *device = ordinal;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetName(char* name, int len, CUdevice dev) {
  FAKE_ENTER("cuDeviceGetName");
  if (name == nullptr || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
  std::snprintf(name, static_cast<std::size_t>(len), "Emulated GPU %d", dev);
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetAttribute(int* value, CUdevice_attribute attrib, CUdevice dev) {
  FAKE_ENTER("cuDeviceGetAttribute");
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
  switch (attrib) {
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED:
      *value = st().vmm ? 1 : 0;
      break;
    case CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED:
      *value = st().vmm ? 1 : 0;
      break;
    default:
      *value = 0;
  }
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDevicePrimaryCtxRetain(CUcontext* pctx, CUdevice dev) {
  FAKE_ENTER("cuDevicePrimaryCtxRetain");
  if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
  *pctx = reinterpret_cast<CUcontext>(&st().contexts[dev]);
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxGetCurrent(CUcontext* pctx) {
  FAKE_ENTER("cuCtxGetCurrent");
  if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *pctx = reinterpret_cast<CUcontext>(t_current);
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxSetCurrent(CUcontext ctx) {
  FAKE_ENTER("cuCtxSetCurrent");
  auto* c = reinterpret_cast<Ctx*>(ctx);
  if (c != nullptr && (c < &st().contexts[0] || c >= &st().contexts[kMaxDevices])) {
    return CUDA_ERROR_INVALID_CONTEXT;
  }
  t_current = c;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxGetDevice(CUdevice* device) {
  FAKE_ENTER("cuCtxGetDevice");
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  *device = t_current->device;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxSynchronize(void) {
  FAKE_ENTER_WORK("cuCtxSynchronize");
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (CUresult rc = capture_check(true)) return rc;
  ++st().stats.syncs;
  return CUDA_SUCCESS;
}

Ctx* ctx_of(CUcontext ctx) {
  auto* c = reinterpret_cast<Ctx*>(ctx);
  if (c < &st().contexts[0] || c >= &st().contexts[kMaxDevices]) return nullptr;
  return valid_device(c->device) ? c : nullptr;
}

CUresult CUDAAPI cuCtxPushCurrent(CUcontext ctx) {
  FAKE_ENTER("cuCtxPushCurrent_v2");
  Ctx* c = ctx_of(ctx);
  if (c == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (t_depth == 16) return CUDA_ERROR_OUT_OF_MEMORY;
  t_stack[t_depth++] = t_current;
  t_current = c;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxPopCurrent(CUcontext* pctx) {
  FAKE_ENTER("cuCtxPopCurrent_v2");
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (pctx != nullptr) *pctx = reinterpret_cast<CUcontext>(t_current);
  t_current = t_depth > 0 ? t_stack[--t_depth] : nullptr;
  return CUDA_SUCCESS;
}

// Peer access, as the real driver keeps it: the current context's device may then reach plain
// allocations of the peer's device (virtual-memory mappings need cuMemSetAccess as well).
CUresult CUDAAPI cuCtxEnablePeerAccess(CUcontext peer, unsigned int flags) {
  FAKE_ENTER("cuCtxEnablePeerAccess");
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  Ctx* c = ctx_of(peer);
  if (c == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (c->device == t_current->device) return CUDA_ERROR_INVALID_DEVICE;
  bool& on = st().peer[t_current->device][c->device];
  if (on) return CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED;
  on = true;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxDisablePeerAccess(CUcontext peer) {
  FAKE_ENTER("cuCtxDisablePeerAccess");
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  Ctx* c = ctx_of(peer);
  if (c == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  bool& on = st().peer[t_current->device][c->device];
  if (!on) return CUDA_ERROR_PEER_ACCESS_NOT_ENABLED;
  on = false;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  FAKE_ENTER("cuMemGetInfo_v2");
  if (free_bytes == nullptr || total_bytes == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  int d = t_current->device;
  *total_bytes = st().shared->capacity[d];
  *free_bytes = st().shared->capacity[d] - st().shared->used[d].load();
  return CUDA_SUCCESS;
}

// ---- virtual memory management ----

CUresult CUDAAPI cuMemGetAllocationGranularity(size_t* granularity, const CUmemAllocationProp* prop,
                                               CUmemAllocationGranularity_flags) {
  FAKE_ENTER("cuMemGetAllocationGranularity");
  if (granularity == nullptr || prop == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(prop->location.id)) return CUDA_ERROR_INVALID_DEVICE;
  *granularity = kGranularity;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemAddressReserve(CUdeviceptr* ptr, size_t size, size_t alignment,
                                     CUdeviceptr addr, unsigned long long flags) {
  FAKE_ENTER("cuMemAddressReserve");
  if (ptr == nullptr || size == 0 || size % kGranularity != 0 || flags != 0 || addr != 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (alignment == 0) alignment = kGranularity;
  if (alignment % kGranularity != 0 || (alignment & (alignment - 1)) != 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  std::size_t len = size + alignment;
  void* p = ::mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
  auto base = reinterpret_cast<std::uintptr_t>(p);
  std::uintptr_t aligned = (base + alignment - 1) & ~(alignment - 1);
  if (aligned > base) ::munmap(p, aligned - base);
  std::uintptr_t end = base + len;
  if (end > aligned + size) ::munmap(reinterpret_cast<void*>(aligned + size), end - aligned - size);
  st().reservations[aligned] = size;
  *ptr = aligned;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemAddressFree(CUdeviceptr ptr, size_t size) {
  FAKE_ENTER("cuMemAddressFree");
  auto it = st().reservations.find(ptr);
  if (it == st().reservations.end() || it->second != size) return CUDA_ERROR_INVALID_VALUE;
  auto m = st().mappings.lower_bound(ptr);
  if (m != st().mappings.end() && m->first < ptr + size) return CUDA_ERROR_INVALID_VALUE;
  ::munmap(reinterpret_cast<void*>(ptr), size);
  st().reservations.erase(it);
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemCreate(CUmemGenericAllocationHandle* handle, size_t size,
                             const CUmemAllocationProp* prop, unsigned long long flags) {
  FAKE_ENTER("cuMemCreate");
  if (handle == nullptr || prop == nullptr || flags != 0 || size == 0 || size % kGranularity != 0 ||
      prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
      prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  int d = prop->location.id;
  if (!valid_device(d)) return CUDA_ERROR_INVALID_DEVICE;
  if (prop->allocFlags.gpuDirectRDMACapable && !st().vmm) return CUDA_ERROR_NOT_SUPPORTED;
  if (!take(d, size)) return CUDA_ERROR_OUT_OF_MEMORY;
  int fd = ::memfd_create("fakecuda", MFD_CLOEXEC);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    if (fd >= 0) ::close(fd);
    give(d, size);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  std::uint64_t h = st().next_handle++;
  st().phys[h] = Phys{fd, size, d, 0, 1};
  ++st().stats.creates;
  *handle = h;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemRelease(CUmemGenericAllocationHandle handle) {
  FAKE_ENTER("cuMemRelease");
  auto it = st().phys.find(handle);
  if (it == st().phys.end() || it->second.refs == 0) return CUDA_ERROR_INVALID_VALUE;
  --it->second.refs;
  ++st().stats.releases;
  if (it->second.refs == 0 && it->second.mappings == 0) destroy_phys(it);
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemRetainAllocationHandle(CUmemGenericAllocationHandle* handle, void* addr) {
  FAKE_ENTER("cuMemRetainAllocationHandle");
  if (handle == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto m = st().mappings.find(reinterpret_cast<std::uintptr_t>(addr));
  if (m == st().mappings.end()) return CUDA_ERROR_INVALID_VALUE;
  auto ph = st().phys.find(m->second.handle);
  if (ph == st().phys.end()) return CUDA_ERROR_INVALID_VALUE;
  ++ph->second.refs;
  *handle = m->second.handle;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemExportToShareableHandle(void* shareable, CUmemGenericAllocationHandle handle,
                                              CUmemAllocationHandleType type, unsigned long long) {
  FAKE_ENTER("cuMemExportToShareableHandle");
  auto ph = st().phys.find(handle);
  if (shareable == nullptr || ph == st().phys.end() || ph->second.refs == 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) return CUDA_ERROR_NOT_SUPPORTED;
  *static_cast<int*>(shareable) = ::dup(ph->second.fd);
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                          CUmemGenericAllocationHandle handle, unsigned long long flags) {
  FAKE_ENTER("cuMemMap");
  if (flags != 0 || size == 0 || size % kGranularity != 0) return CUDA_ERROR_INVALID_VALUE;
  if (offset != 0) return CUDA_ERROR_NOT_SUPPORTED;
  auto ph = st().phys.find(handle);
  if (ph == st().phys.end() || ph->second.refs == 0 || size > ph->second.size) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  auto r = st().reservations.upper_bound(ptr);
  if (r == st().reservations.begin()) return CUDA_ERROR_INVALID_VALUE;
  --r;
  if (ptr < r->first || ptr + size > r->first + r->second) return CUDA_ERROR_INVALID_VALUE;
  auto m = st().mappings.upper_bound(ptr);
  if (m != st().mappings.end() && m->first < ptr + size) return CUDA_ERROR_INVALID_VALUE;
  if (m != st().mappings.begin()) {
    auto prev = std::prev(m);
    if (prev->first + prev->second.size > ptr) return CUDA_ERROR_INVALID_VALUE;
  }
  void* p = ::mmap(reinterpret_cast<void*>(ptr), size, PROT_NONE, MAP_SHARED | MAP_FIXED,
                   ph->second.fd, 0);
  if (p == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
  ++ph->second.mappings;
  st().mappings[ptr] = Mapping{size, handle, PROT_NONE, 0};
  ++st().stats.maps;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemUnmap(CUdeviceptr ptr, size_t size) {
  FAKE_ENTER("cuMemUnmap");
  auto m = st().mappings.find(ptr);
  if (m == st().mappings.end() || m->second.size != size) return CUDA_ERROR_INVALID_VALUE;
  void* p = ::mmap(reinterpret_cast<void*>(ptr), size, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return CUDA_ERROR_UNKNOWN;
  auto ph = st().phys.find(m->second.handle);
  st().mappings.erase(m);
  ++st().stats.unmaps;
  if (ph != st().phys.end() && --ph->second.mappings == 0 && ph->second.refs == 0) {
    destroy_phys(ph);
  }
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc* desc,
                                size_t count) {
  FAKE_ENTER("cuMemSetAccess");
  if (desc == nullptr || count == 0 || size == 0) return CUDA_ERROR_INVALID_VALUE;
  unsigned grant = 0;
  unsigned revoke = 0;
  for (std::size_t i = 0; i < count; ++i) {
    if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(desc[i].location.id)) return CUDA_ERROR_INVALID_DEVICE;
    unsigned bit = 1u << desc[i].location.id;
    if (desc[i].flags == CU_MEM_ACCESS_FLAGS_PROT_NONE) {
      revoke |= bit;
    } else {
      grant |= bit;
    }
  }
  // The range must be covered by mappings, end to end.
  std::uintptr_t cur = ptr;
  while (cur < ptr + size) {
    auto m = st().mappings.find(cur);
    if (m == st().mappings.end() || cur + m->second.size > ptr + size) {
      return CUDA_ERROR_INVALID_VALUE;
    }
    cur += m->second.size;
  }
  // Other devices' access stays as it was, as with the real driver.
  for (cur = ptr; cur < ptr + size;) {
    Mapping& m = st().mappings[cur];
    m.access = (m.access | grant) & ~revoke;
    int prot = m.access != 0 ? PROT_READ | PROT_WRITE : PROT_NONE;
    if (::mprotect(reinterpret_cast<void*>(cur), m.size, prot) != 0) return CUDA_ERROR_UNKNOWN;
    m.prot = prot;
    cur += m.size;
  }
  return CUDA_SUCCESS;
}

// ---- plain allocations (what the emulated runtime's cudaMalloc uses) ----

namespace {
// Caller holds the lock.
CUresult plain_alloc(CUdeviceptr* dptr, size_t size, bool async) {
  if (dptr == nullptr || size == 0) return CUDA_ERROR_INVALID_VALUE;
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  int d = t_current->device;
  std::size_t charged = (size + kGranularity - 1) / kGranularity * kGranularity;
  if (!take(d, charged)) return CUDA_ERROR_OUT_OF_MEMORY;
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    give(d, charged);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  st().plain[reinterpret_cast<std::uintptr_t>(p)] = Plain{size, charged, d, async};
  *dptr = reinterpret_cast<CUdeviceptr>(p);
  return CUDA_SUCCESS;
}

CUresult plain_free(CUdeviceptr dptr) {
  auto it = st().plain.find(dptr);
  if (it == st().plain.end()) return CUDA_ERROR_INVALID_VALUE;
  ::munmap(reinterpret_cast<void*>(dptr), it->second.size);
  give(it->second.device, it->second.charged);
  st().plain.erase(it);
  return CUDA_SUCCESS;
}

constexpr std::size_t kPitchAlignment = 512;
}  // namespace

CUresult CUDAAPI cuMemAlloc(CUdeviceptr* dptr, size_t size) {
  FAKE_ENTER("cuMemAlloc_v2");
  return plain_alloc(dptr, size, false);
}

// The ABI of CUDA before 3.2: 32-bit addresses and sizes. Only reachable through
// cuGetProcAddress with an old version, as with the real driver; never used for real work.
extern "C" CUresult CUDAAPI fake_cuMemAlloc_v1(unsigned int* dptr, unsigned int size) {
  (void)dptr;
  (void)size;
  return CUDA_ERROR_NOT_SUPPORTED;
}

CUresult CUDAAPI cuMemAllocPitch(CUdeviceptr* dptr, size_t* pitch, size_t width, size_t height,
                                 unsigned int element_size) {
  FAKE_ENTER("cuMemAllocPitch_v2");
  if (pitch == nullptr || width == 0 || height == 0) return CUDA_ERROR_INVALID_VALUE;
  if (element_size != 4 && element_size != 8 && element_size != 16) return CUDA_ERROR_INVALID_VALUE;
  std::size_t p = (width + kPitchAlignment - 1) / kPitchAlignment * kPitchAlignment;
  CUresult rc = plain_alloc(dptr, p * height, false);
  if (rc == CUDA_SUCCESS) *pitch = p;
  return rc;
}

CUresult CUDAAPI cuMemFree(CUdeviceptr dptr) {
  FAKE_ENTER("cuMemFree_v2");
  return plain_free(dptr);
}

// Stream-ordered allocation: the emulated pool hands out plain memory and keeps nothing cached.
extern "C" CUresult CUDAAPI cuMemAllocAsync(CUdeviceptr* dptr, size_t size, CUstream) {
  FAKE_ENTER("cuMemAllocAsync");
  return plain_alloc(dptr, size, true);
}
extern "C" CUresult CUDAAPI cuMemAllocAsync_ptsz(CUdeviceptr* dptr, size_t size, CUstream s) {
  return cuMemAllocAsync(dptr, size, s);
}
extern "C" CUresult CUDAAPI cuMemAllocFromPoolAsync(CUdeviceptr* dptr, size_t size, CUmemoryPool,
                                                    CUstream) {
  FAKE_ENTER("cuMemAllocFromPoolAsync");
  return plain_alloc(dptr, size, true);
}
extern "C" CUresult CUDAAPI cuMemAllocFromPoolAsync_ptsz(CUdeviceptr* dptr, size_t size,
                                                         CUmemoryPool pool, CUstream s) {
  return cuMemAllocFromPoolAsync(dptr, size, pool, s);
}
extern "C" CUresult CUDAAPI cuMemFreeAsync(CUdeviceptr dptr, CUstream) {
  FAKE_ENTER("cuMemFreeAsync");
  return plain_free(dptr);
}
extern "C" CUresult CUDAAPI cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream s) {
  return cuMemFreeAsync(dptr, s);
}

// Legacy IPC works on plain allocations only; the real driver refuses virtual-memory mappings.
CUresult CUDAAPI cuIpcGetMemHandle(CUipcMemHandle* handle, CUdeviceptr dptr) {
  FAKE_ENTER("cuIpcGetMemHandle");
  if (handle == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (st().plain.find(dptr) == st().plain.end()) return CUDA_ERROR_INVALID_VALUE;
  std::memset(handle, 0, sizeof(*handle));
  std::memcpy(handle->reserved, &dptr, sizeof(dptr));
  return CUDA_SUCCESS;
}

// ---- host memory registration ----

CUresult CUDAAPI cuMemHostRegister(void* p, size_t size, unsigned int) {
  FAKE_ENTER("cuMemHostRegister_v2");
  if (p == nullptr || size == 0) return CUDA_ERROR_INVALID_VALUE;
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (CUresult rc = capture_check(false)) return rc;
  auto a = reinterpret_cast<std::uintptr_t>(p);
  auto it = st().registrations.lower_bound(a);
  if (it != st().registrations.end() && it->first < a + size) {
    return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
  }
  if (it != st().registrations.begin() && std::prev(it)->first + std::prev(it)->second > a) {
    return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
  }
  st().registrations[a] = size;
  ++st().stats.host_registrations;
  st().stats.registered_bytes += size;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemHostUnregister(void* p) {
  FAKE_ENTER("cuMemHostUnregister");
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (CUresult rc = capture_check(false)) return rc;
  auto it = st().registrations.find(reinterpret_cast<std::uintptr_t>(p));
  if (it == st().registrations.end()) return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
  st().stats.registered_bytes -= it->second;
  ++st().stats.host_unregistrations;
  st().registrations.erase(it);
  return CUDA_SUCCESS;
}

// ---- streams and copies (copies complete before they return) ----

CUresult CUDAAPI cuStreamCreate(CUstream* stream, unsigned int) {
  FAKE_ENTER("cuStreamCreate");
  if (stream == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  *stream = reinterpret_cast<CUstream>(new int(t_current->device));
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuStreamDestroy(CUstream stream) {
  FAKE_ENTER("cuStreamDestroy_v2");
  delete reinterpret_cast<int*>(stream);
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuStreamSynchronize(CUstream) {
  FAKE_ENTER_WORK("cuStreamSynchronize");
  return CUDA_SUCCESS;
}

// Copies complete before they return, so an event is reached as soon as it is recorded.
CUresult CUDAAPI cuEventCreate(CUevent* event, unsigned int) {
  FAKE_ENTER("cuEventCreate");
  if (event == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  *event = reinterpret_cast<CUevent>(new int(0));
  ++st().stats.events_created;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuEventRecord(CUevent event, CUstream) {
  FAKE_ENTER("cuEventRecord");
  if (event == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuEventSynchronize(CUevent event) {
  FAKE_ENTER_WORK("cuEventSynchronize");
  return event == nullptr ? CUDA_ERROR_INVALID_HANDLE : CUDA_SUCCESS;
}

CUresult CUDAAPI cuEventDestroy(CUevent event) {
  FAKE_ENTER("cuEventDestroy_v2");
  if (event == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  delete reinterpret_cast<int*>(event);
  ++st().stats.events_destroyed;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemcpyDtoHAsync(void* dst, CUdeviceptr src, size_t n, CUstream) {
  copy_delay();
  FAKE_ENTER_WORK("cuMemcpyDtoHAsync_v2");
  return copy_checked(dst, reinterpret_cast<void*>(src), n, src, dst);
}

CUresult CUDAAPI cuMemcpyHtoDAsync(CUdeviceptr dst, const void* src, size_t n, CUstream) {
  copy_delay();
  FAKE_ENTER_WORK("cuMemcpyHtoDAsync_v2");
  return copy_checked(reinterpret_cast<void*>(dst), src, n, dst, src);
}

CUresult CUDAAPI cuMemcpyDtoH(void* dst, CUdeviceptr src, size_t n) {
  FAKE_ENTER_WORK("cuMemcpyDtoH_v2");
  return copy_checked(dst, reinterpret_cast<void*>(src), n, src, dst);
}

CUresult CUDAAPI cuMemcpyHtoD(CUdeviceptr dst, const void* src, size_t n) {
  FAKE_ENTER_WORK("cuMemcpyHtoD_v2");
  return copy_checked(reinterpret_cast<void*>(dst), src, n, dst, src);
}

CUresult CUDAAPI cuMemsetD8(CUdeviceptr dst, unsigned char value, size_t n) {
  FAKE_ENTER_WORK("cuMemsetD8_v2");
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (!device_range_ok(dst, n)) return CUDA_ERROR_INVALID_VALUE;
  std::memset(reinterpret_cast<void*>(dst), value, n);
  return CUDA_SUCCESS;
}

// ---- kernels and graphs ----

namespace {

thread_local sigjmp_buf* t_kernel_jump = nullptr;
struct sigaction g_prev_segv;
struct sigaction g_prev_bus;

// A fault inside a kernel ends the kernel; any other goes to the handler the process had.
void on_fault(int sig, siginfo_t* info, void* context) {
  if (t_kernel_jump != nullptr) siglongjmp(*t_kernel_jump, 1);
  const struct sigaction& prev = sig == SIGSEGV ? g_prev_segv : g_prev_bus;
  if ((prev.sa_flags & SA_SIGINFO) != 0 && prev.sa_sigaction != nullptr) {
    prev.sa_sigaction(sig, info, context);
    return;
  }
  if ((prev.sa_flags & SA_SIGINFO) == 0 && prev.sa_handler != SIG_DFL &&
      prev.sa_handler != SIG_IGN) {
    prev.sa_handler(sig);
    return;
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_prev_segv);
    sigaction(SIGBUS, &sa, &g_prev_bus);
  });
}

CUresult run_kernel(const char* name, fakecuda_kernel kernel, void** params) {
  {
    FAKE_ENTER_WORK(name);
    if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
    ++st().stats.launches;
  }
  if (kernel == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  install_fault_handler();
  sigjmp_buf jump;
  if (sigsetjmp(jump, 1) != 0) {
    t_kernel_jump = nullptr;
    g_context_lost.store(true);
    return CUDA_ERROR_ILLEGAL_ADDRESS;
  }
  t_kernel_jump = &jump;
  kernel(params);
  t_kernel_jump = nullptr;
  return CUDA_SUCCESS;
}

CUresult run_graph(const char* name, CUgraphExec exec) {
  if (exec == nullptr) return CUDA_ERROR_INVALID_VALUE;
  const auto* graph = reinterpret_cast<const fakecuda_graph*>(exec);
  return run_kernel(name, graph->kernel, graph->params);
}

}  // namespace

CUresult CUDAAPI cuLaunchKernel(CUfunction f, unsigned int, unsigned int, unsigned int,
                                unsigned int, unsigned int, unsigned int, unsigned int, CUstream,
                                void** params, void**) {
  return run_kernel("cuLaunchKernel", reinterpret_cast<fakecuda_kernel>(f), params);
}

extern "C" CUresult CUDAAPI cuLaunchKernel_ptsz(CUfunction f, unsigned int, unsigned int,
                                                unsigned int, unsigned int, unsigned int,
                                                unsigned int, unsigned int, CUstream, void** params,
                                                void**) {
  return run_kernel("cuLaunchKernel_ptsz", reinterpret_cast<fakecuda_kernel>(f), params);
}

CUresult CUDAAPI cuGraphLaunch(CUgraphExec exec, CUstream) {
  return run_graph("cuGraphLaunch", exec);
}

extern "C" CUresult CUDAAPI cuGraphLaunch_ptsz(CUgraphExec exec, CUstream) {
  return run_graph("cuGraphLaunch_ptsz", exec);
}

CUresult CUDAAPI cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode* mode) {
  FAKE_ENTER("cuThreadExchangeStreamCaptureMode");
  if (mode == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::swap(*mode, t_capture_mode);
  return CUDA_SUCCESS;
}

// ---- errors ----

CUresult CUDAAPI cuGetErrorName(CUresult error, const char** name) {
  if (name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  switch (error) {
    case CUDA_SUCCESS:
      *name = "CUDA_SUCCESS";
      break;
    case CUDA_ERROR_INVALID_VALUE:
      *name = "CUDA_ERROR_INVALID_VALUE";
      break;
    case CUDA_ERROR_OUT_OF_MEMORY:
      *name = "CUDA_ERROR_OUT_OF_MEMORY";
      break;
    case CUDA_ERROR_NOT_INITIALIZED:
      *name = "CUDA_ERROR_NOT_INITIALIZED";
      break;
    case CUDA_ERROR_INVALID_DEVICE:
      *name = "CUDA_ERROR_INVALID_DEVICE";
      break;
    case CUDA_ERROR_INVALID_CONTEXT:
      *name = "CUDA_ERROR_INVALID_CONTEXT";
      break;
    case CUDA_ERROR_NOT_SUPPORTED:
      *name = "CUDA_ERROR_NOT_SUPPORTED";
      break;
    case CUDA_ERROR_ILLEGAL_ADDRESS:
      *name = "CUDA_ERROR_ILLEGAL_ADDRESS";
      break;
    case CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED:
      *name = "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED";
      break;
    case CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED:
      *name = "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED";
      break;
    default:
      *name = "CUDA_ERROR_UNKNOWN";
      return CUDA_ERROR_INVALID_VALUE;
  }
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuGetErrorString(CUresult error, const char** text) {
  if (text == nullptr) return CUDA_ERROR_INVALID_VALUE;
  switch (error) {
    case CUDA_SUCCESS:
      *text = "no error";
      break;
    case CUDA_ERROR_OUT_OF_MEMORY:
      *text = "out of memory";
      break;
    case CUDA_ERROR_INVALID_VALUE:
      *text = "invalid argument";
      break;
    case CUDA_ERROR_INVALID_CONTEXT:
      *text = "invalid device context";
      break;
    case CUDA_ERROR_NOT_INITIALIZED:
      *text = "initialization error";
      break;
    default:
      *text = "unknown error";
      break;
  }
  return CUDA_SUCCESS;
}

// ---- entry points ----

CUresult CUDAAPI cuGetExportTable(const void** table, const CUuuid*) {
  if (table == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return CUDA_ERROR_NOT_SUPPORTED;
}

extern "C" CUresult CUDAAPI fake_cuGetProcAddress_v1(const char* symbol, void** pfn, int version,
                                                     cuuint64_t flags);

namespace {
struct Entry {
  const char* name;  // as cuGetProcAddress is asked, without ABI suffix
  int since;         // the first CUDA version with this ABI
  void* legacy;      // the function for the legacy default stream
  void* per_thread;  // its per-thread-default-stream variant (null: same as legacy)
};

#define FAKE_FN(f) reinterpret_cast<void*>(&f)
// The driver's table of entry points, newest ABI of each name last. The library is linked with
// -Bsymbolic, so these are its own functions even when another object exports the same names.
const Entry kEntries[] = {
    {"cuInit", 2000, FAKE_FN(cuInit), nullptr},
    {"cuDriverGetVersion", 2020, FAKE_FN(cuDriverGetVersion), nullptr},
    {"cuDeviceGet", 2000, FAKE_FN(cuDeviceGet), nullptr},
    {"cuDeviceGetCount", 2000, FAKE_FN(cuDeviceGetCount), nullptr},
    {"cuDeviceGetName", 2000, FAKE_FN(cuDeviceGetName), nullptr},
    {"cuDeviceGetAttribute", 2000, FAKE_FN(cuDeviceGetAttribute), nullptr},
    {"cuDevicePrimaryCtxRetain", 7000, FAKE_FN(cuDevicePrimaryCtxRetain), nullptr},
    {"cuCtxGetCurrent", 4000, FAKE_FN(cuCtxGetCurrent), nullptr},
    {"cuCtxSetCurrent", 4000, FAKE_FN(cuCtxSetCurrent), nullptr},
    {"cuCtxGetDevice", 2000, FAKE_FN(cuCtxGetDevice), nullptr},
    {"cuCtxSynchronize", 2000, FAKE_FN(cuCtxSynchronize), nullptr},
    {"cuCtxPushCurrent", 4000, FAKE_FN(cuCtxPushCurrent), nullptr},
    {"cuCtxPopCurrent", 4000, FAKE_FN(cuCtxPopCurrent), nullptr},
    {"cuCtxEnablePeerAccess", 4000, FAKE_FN(cuCtxEnablePeerAccess), nullptr},
    {"cuCtxDisablePeerAccess", 4000, FAKE_FN(cuCtxDisablePeerAccess), nullptr},
    {"cuMemGetInfo", 3020, FAKE_FN(cuMemGetInfo), nullptr},
    {"cuMemAlloc", 2000, FAKE_FN(fake_cuMemAlloc_v1), nullptr},
    {"cuMemAlloc", 3020, FAKE_FN(cuMemAlloc), nullptr},
    {"cuMemAllocPitch", 3020, FAKE_FN(cuMemAllocPitch), nullptr},
    {"cuMemFree", 3020, FAKE_FN(cuMemFree), nullptr},
    {"cuMemAllocAsync", 11020, FAKE_FN(cuMemAllocAsync), FAKE_FN(cuMemAllocAsync_ptsz)},
    {"cuMemAllocFromPoolAsync", 11020, FAKE_FN(cuMemAllocFromPoolAsync),
     FAKE_FN(cuMemAllocFromPoolAsync_ptsz)},
    {"cuMemFreeAsync", 11020, FAKE_FN(cuMemFreeAsync), FAKE_FN(cuMemFreeAsync_ptsz)},
    {"cuMemCreate", 10020, FAKE_FN(cuMemCreate), nullptr},
    {"cuMemRelease", 10020, FAKE_FN(cuMemRelease), nullptr},
    {"cuMemMap", 10020, FAKE_FN(cuMemMap), nullptr},
    {"cuMemUnmap", 10020, FAKE_FN(cuMemUnmap), nullptr},
    {"cuMemSetAccess", 10020, FAKE_FN(cuMemSetAccess), nullptr},
    {"cuMemRetainAllocationHandle", 11000, FAKE_FN(cuMemRetainAllocationHandle), nullptr},
    {"cuMemExportToShareableHandle", 10020, FAKE_FN(cuMemExportToShareableHandle), nullptr},
    {"cuMemAddressReserve", 10020, FAKE_FN(cuMemAddressReserve), nullptr},
    {"cuMemAddressFree", 10020, FAKE_FN(cuMemAddressFree), nullptr},
    {"cuMemGetAllocationGranularity", 10020, FAKE_FN(cuMemGetAllocationGranularity), nullptr},
    {"cuIpcGetMemHandle", 4010, FAKE_FN(cuIpcGetMemHandle), nullptr},
    {"cuMemcpyHtoD", 3020, FAKE_FN(cuMemcpyHtoD), nullptr},
    {"cuMemcpyDtoH", 3020, FAKE_FN(cuMemcpyDtoH), nullptr},
    {"cuMemsetD8", 3020, FAKE_FN(cuMemsetD8), nullptr},
    {"cuLaunchKernel", 4000, FAKE_FN(cuLaunchKernel), FAKE_FN(cuLaunchKernel_ptsz)},
    {"cuGraphLaunch", 10000, FAKE_FN(cuGraphLaunch), FAKE_FN(cuGraphLaunch_ptsz)},
    {"cuGetErrorName", 6000, FAKE_FN(cuGetErrorName), nullptr},
    {"cuGetErrorString", 6000, FAKE_FN(cuGetErrorString), nullptr},
    {"cuGetExportTable", 3000, FAKE_FN(cuGetExportTable), nullptr},
    {"cuGetProcAddress", 11030, FAKE_FN(fake_cuGetProcAddress_v1), nullptr},
    {"cuGetProcAddress", 12000, FAKE_FN(cuGetProcAddress_v2), nullptr},
};
#undef FAKE_FN

CUresult lookup(const char* symbol, void** pfn, int version, cuuint64_t flags,
                CUdriverProcAddressQueryResult* status) {
  if (symbol == nullptr || pfn == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *pfn = nullptr;
  const Entry* best = nullptr;
  bool known = false;
  for (const Entry& e : kEntries) {
    if (std::strcmp(e.name, symbol) != 0) continue;
    known = true;
    if (e.since <= version) best = &e;
  }
  if (best == nullptr) {
    if (status) {
      *status =
          known ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    }
    return CUDA_ERROR_NOT_FOUND;
  }
  bool per_thread = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
  *pfn = per_thread && best->per_thread ? best->per_thread : best->legacy;
  if (status) *status = CU_GET_PROC_ADDRESS_SUCCESS;
  return CUDA_SUCCESS;
}
}  // namespace

CUresult CUDAAPI cuGetProcAddress(const char* symbol, void** pfn, int version, cuuint64_t flags,
                                  CUdriverProcAddressQueryResult* status) {
  return lookup(symbol, pfn, version, flags, status);
}

// The CUDA 11.3 ABI, exported as "cuGetProcAddress" like the real driver does.
extern "C" CUresult CUDAAPI fake_cuGetProcAddress_v1(const char* symbol, void** pfn, int version,
                                                     cuuint64_t flags) {
  return lookup(symbol, pfn, version, flags, nullptr);
}
extern "C" CUresult CUDAAPI fake_export_cuGetProcAddress(const char*, void**, int,
                                                         cuuint64_t) __asm__("cuGetProcAddress")
    __attribute__((alias("fake_cuGetProcAddress_v1")));

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
  if (st().shared == nullptr || device < 0 || device >= kMaxDevices) return 0;
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

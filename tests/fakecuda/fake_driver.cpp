// An emulated CUDA driver that keeps "device" memory in host memory, faithful to the subset of
// the driver API that gpusleep and the emulated runtime use:
//  - an address reservation is an inaccessible anonymous mapping;
//  - physical memory is a memory file, counted against a per-device capacity shared by every
//    process that names the same FAKECUDA_STATE file (as processes share a GPU);
//  - mapping maps the file there, inaccessible until cuMemSetAccess; unmapping puts the
//    reservation back, so touching slept memory faults like an illegal address;
//  - copies are memcpy after checking that the device range is mapped and accessible.
// Rules the real driver enforces and gpusleep must respect are enforced here too: cuInit first,
// a current context for copies, streams, host registration and memory info, granularity-aligned
// sizes, unmap of exactly a mapped range, no double registration of host memory.
//
// Environment: FAKECUDA_DEVICES (1), FAKECUDA_MEMORY (bytes per device, 4 GiB),
// FAKECUDA_STATE (file shared between processes; default: private to the process),
// FAKECUDA_NO_VMM=1 (devices report no virtual memory management), FAKECUDA_COPY_DELAY_US.
#include <cuda.h>
#include <fcntl.h>
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
  bool released;
};

struct Mapping {
  std::size_t size;
  std::uint64_t handle;
  int prot;
};

struct Plain {
  std::size_t size;
  std::size_t charged;
  int device;
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
};

State& st() {
  static State* s = new State();
  return *s;
}

thread_local Ctx* t_current = nullptr;
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

#define FAKE_ENTER(name)                                    \
  std::lock_guard<std::mutex> lock(st().mu);                \
  if (!st().initialized) return CUDA_ERROR_NOT_INITIALIZED; \
  if (CUresult injected_rc = injected(name)) return injected_rc

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
  FAKE_ENTER("cuCtxSynchronize");
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (CUresult rc = capture_check(true)) return rc;
  ++st().stats.syncs;
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
  st().phys[h] = Phys{fd, size, d, 0, false};
  ++st().stats.creates;
  *handle = h;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemRelease(CUmemGenericAllocationHandle handle) {
  FAKE_ENTER("cuMemRelease");
  auto it = st().phys.find(handle);
  if (it == st().phys.end() || it->second.released) return CUDA_ERROR_INVALID_VALUE;
  it->second.released = true;
  ++st().stats.releases;
  if (it->second.mappings == 0) destroy_phys(it);
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                          CUmemGenericAllocationHandle handle, unsigned long long flags) {
  FAKE_ENTER("cuMemMap");
  if (flags != 0 || size == 0 || size % kGranularity != 0) return CUDA_ERROR_INVALID_VALUE;
  if (offset != 0) return CUDA_ERROR_NOT_SUPPORTED;
  auto ph = st().phys.find(handle);
  if (ph == st().phys.end() || ph->second.released || size > ph->second.size) {
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
  st().mappings[ptr] = Mapping{size, handle, PROT_NONE};
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
  if (ph != st().phys.end() && --ph->second.mappings == 0 && ph->second.released) {
    destroy_phys(ph);
  }
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc* desc,
                                size_t count) {
  FAKE_ENTER("cuMemSetAccess");
  if (desc == nullptr || count == 0 || size == 0) return CUDA_ERROR_INVALID_VALUE;
  int prot = PROT_NONE;
  for (std::size_t i = 0; i < count; ++i) {
    if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(desc[i].location.id)) return CUDA_ERROR_INVALID_DEVICE;
    if (desc[i].flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE) prot = PROT_READ | PROT_WRITE;
    if (desc[i].flags == CU_MEM_ACCESS_FLAGS_PROT_READ && prot == PROT_NONE) prot = PROT_READ;
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
  if (::mprotect(reinterpret_cast<void*>(ptr), size, prot) != 0) return CUDA_ERROR_UNKNOWN;
  for (cur = ptr; cur < ptr + size;) {
    Mapping& m = st().mappings[cur];
    m.prot = prot;
    cur += m.size;
  }
  return CUDA_SUCCESS;
}

// ---- plain allocations (what the emulated runtime's cudaMalloc uses) ----

CUresult CUDAAPI cuMemAlloc(CUdeviceptr* dptr, size_t size) {
  FAKE_ENTER("cuMemAlloc_v2");
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
  st().plain[reinterpret_cast<std::uintptr_t>(p)] = Plain{size, charged, d};
  *dptr = reinterpret_cast<CUdeviceptr>(p);
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemFree(CUdeviceptr dptr) {
  FAKE_ENTER("cuMemFree_v2");
  auto it = st().plain.find(dptr);
  if (it == st().plain.end()) return CUDA_ERROR_INVALID_VALUE;
  ::munmap(reinterpret_cast<void*>(dptr), it->second.size);
  give(it->second.device, it->second.charged);
  st().plain.erase(it);
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
  FAKE_ENTER("cuStreamSynchronize");
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
  FAKE_ENTER("cuEventSynchronize");
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
  FAKE_ENTER("cuMemcpyDtoHAsync_v2");
  return copy_checked(dst, reinterpret_cast<void*>(src), n, src, dst);
}

CUresult CUDAAPI cuMemcpyHtoDAsync(CUdeviceptr dst, const void* src, size_t n, CUstream) {
  copy_delay();
  FAKE_ENTER("cuMemcpyHtoDAsync_v2");
  return copy_checked(reinterpret_cast<void*>(dst), src, n, dst, src);
}

CUresult CUDAAPI cuMemcpyDtoH(void* dst, CUdeviceptr src, size_t n) {
  FAKE_ENTER("cuMemcpyDtoH_v2");
  return copy_checked(dst, reinterpret_cast<void*>(src), n, src, dst);
}

CUresult CUDAAPI cuMemcpyHtoD(CUdeviceptr dst, const void* src, size_t n) {
  FAKE_ENTER("cuMemcpyHtoD_v2");
  return copy_checked(reinterpret_cast<void*>(dst), src, n, dst, src);
}

CUresult CUDAAPI cuMemsetD8(CUdeviceptr dst, unsigned char value, size_t n) {
  FAKE_ENTER("cuMemsetD8_v2");
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (!device_range_ok(dst, n)) return CUDA_ERROR_INVALID_VALUE;
  std::memset(reinterpret_cast<void*>(dst), value, n);
  return CUDA_SUCCESS;
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

// ---- test controls ----

extern "C" void fakecuda_reset(void) {
  std::lock_guard<std::mutex> lock(st().mu);
  st().faults.clear();
  std::uint64_t registered = st().stats.registered_bytes;
  st().stats = FakeCudaStats{};
  st().stats.registered_bytes = registered;
  st().copy_delay_us = 0;
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

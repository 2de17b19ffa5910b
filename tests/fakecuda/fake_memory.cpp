// The emulated driver: virtual memory management, plain and stream-ordered allocations, legacy
// IPC and host memory registration.
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <mutex>

#include "fake_driver.h"

using namespace fakecuda;

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

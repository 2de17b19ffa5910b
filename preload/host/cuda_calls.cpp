// What the CUDA hooks do once their guard is held (cuda_calls.h). Every call into the runtime here
// goes through the hook's Reentry guard (process.h), so the library never manages its own
// allocations (nor those the real runtime makes when an allocation passes through to it).
#include "host/cuda_calls.h"

#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "base/log.h"
#include "core/engine.h"
#include "driver/driver.h"
#include "driver/real_runtime.h"
#include "host/live_site.h"

namespace gpusleep::cuda_calls {
namespace {

// Allocates `bytes` on `device` as a region, with the call site the tagging rules ask about.
AllocOutcome allocate_region(Runtime* rt, std::size_t bytes, int device, std::uintptr_t call_site,
                             DevicePtr* va) {
  LiveSite site(rt->driver(), rt->options().python_stacks);
  AllocOutcome outcome = rt->engine().allocate(bytes, device, call_site, va, &site);
  if (outcome == AllocOutcome::kOutOfMemory) {
    GS_INFO("out of device memory for %zu bytes on device %d", bytes, device);
  }
  return outcome;
}

cudaError_t real_malloc(Engine* engine, void** devPtr, size_t size) {
  const RealRuntime& real = real_runtime();
  if (real.cudaMalloc == nullptr) return cudaErrorInitializationError;
  cudaError_t rc = real.cudaMalloc(devPtr, size);
  if (rc == cudaSuccess && engine != nullptr && devPtr != nullptr && *devPtr != nullptr) {
    engine->note_passthrough(reinterpret_cast<DevicePtr>(*devPtr), size);
  }
  return rc;
}

// Pitch of cuMemAllocPitch: rows aligned for any texture binding, as the driver does.
constexpr std::size_t kPitchAlignment = 512;

// cuMemAlloc's contract on a managed region: the current context's device, its error codes.
CUresult allocate_managed(Runtime* rt, std::size_t bytes, std::uintptr_t call_site,
                          CUdeviceptr* dptr, bool* passthrough) {
  *passthrough = false;
  int device = 0;
  if (rt->driver().current_device(&device) != kDrvOk) {
    *passthrough = true;  // no current context: the driver says so
    return CUDA_SUCCESS;
  }
  DevicePtr va = 0;
  switch (allocate_region(rt, bytes, device, call_site, &va)) {
    case AllocOutcome::kManaged:
      *dptr = static_cast<CUdeviceptr>(va);
      return CUDA_SUCCESS;
    case AllocOutcome::kOutOfMemory:
      return CUDA_ERROR_OUT_OF_MEMORY;
    case AllocOutcome::kPassthrough:
      break;
  }
  *passthrough = true;
  return CUDA_SUCCESS;
}

// Refuses a call on the program's memory while it is asleep (it would act on memory that is not
// there); the program sees an error instead of a fault.
CUresult refuse_asleep(const char* call, std::uint64_t key) {
  GS_WARN("%s on handle 0x%llx while its memory is asleep: refused until wake", call,
          static_cast<unsigned long long>(key));
  return CUDA_ERROR_NOT_PERMITTED;
}

}  // namespace

cudaError_t runtime_malloc(const Reentry& guard, std::uintptr_t call_site, void** devPtr,
                           size_t size) {
  Runtime* rt = Runtime::enter(guard);
  if (rt == nullptr || devPtr == nullptr) return real_malloc(nullptr, devPtr, size);
  int device = 0;
  const RealRuntime& real = real_runtime();
  if (real.cudaGetDevice == nullptr || real.cudaGetDevice(&device) != cudaSuccess) {
    return real_malloc(&rt->engine(), devPtr, size);
  }
  DevicePtr va = 0;
  switch (allocate_region(rt, size, device, call_site, &va)) {
    case AllocOutcome::kManaged:
      *devPtr = reinterpret_cast<void*>(va);
      return cudaSuccess;
    case AllocOutcome::kOutOfMemory:
      *devPtr = nullptr;
      return cudaErrorMemoryAllocation;
    case AllocOutcome::kPassthrough:
      break;
  }
  return real_malloc(&rt->engine(), devPtr, size);
}

cudaError_t runtime_free(const Reentry& guard, void* devPtr) {
  const RealRuntime& real = real_runtime();
  Runtime* rt = devPtr != nullptr ? Runtime::enter(guard) : nullptr;
  if (rt != nullptr) {
    auto ptr = reinterpret_cast<DevicePtr>(devPtr);
    if (rt->engine().free(ptr) == FreeOutcome::kFreed) return cudaSuccess;
    rt->engine().forget_passthrough(ptr);
  }
  return real.cudaFree != nullptr ? real.cudaFree(devPtr) : cudaErrorInitializationError;
}

CUresult mem_alloc(const Reentry& guard, std::uintptr_t call_site,
                   CUresult (*real)(CUdeviceptr*, size_t), CUdeviceptr* dptr, size_t bytesize) {
  Runtime* rt = dptr != nullptr && bytesize != 0 ? Runtime::enter(guard) : nullptr;
  if (rt != nullptr) {
    bool passthrough = false;
    CUresult rc = allocate_managed(rt, bytesize, call_site, dptr, &passthrough);
    if (!passthrough) return rc;
  }
  CUresult rc = real(dptr, bytesize);
  if (rc == CUDA_SUCCESS && rt != nullptr) rt->engine().note_passthrough(*dptr, bytesize);
  return rc;
}

CUresult mem_alloc_pitch(const Reentry& guard, std::uintptr_t call_site,
                         CUresult (*real)(CUdeviceptr*, size_t*, size_t, size_t, unsigned int),
                         CUdeviceptr* dptr, size_t* pPitch, size_t WidthInBytes, size_t Height,
                         unsigned int ElementSizeBytes) {
  const bool valid = dptr != nullptr && pPitch != nullptr && WidthInBytes != 0 && Height != 0 &&
                     (ElementSizeBytes == 4 || ElementSizeBytes == 8 || ElementSizeBytes == 16);
  Runtime* rt = valid ? Runtime::enter(guard) : nullptr;  // invalid: the driver's own error
  if (rt != nullptr) {
    const std::size_t pitch =
        (WidthInBytes + kPitchAlignment - 1) / kPitchAlignment * kPitchAlignment;
    if (pitch >= WidthInBytes && Height <= std::numeric_limits<std::size_t>::max() / pitch) {
      bool passthrough = false;
      CUresult rc = allocate_managed(rt, pitch * Height, call_site, dptr, &passthrough);
      if (!passthrough) {
        if (rc == CUDA_SUCCESS) *pPitch = pitch;
        return rc;
      }
    }
  }
  CUresult rc = real(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
  if (rc == CUDA_SUCCESS && rt != nullptr) rt->engine().note_passthrough(*dptr, *pPitch * Height);
  return rc;
}

CUresult mem_free(const Reentry& guard, CUresult (*real)(CUdeviceptr), CUdeviceptr dptr) {
  Runtime* rt = dptr != 0 ? Runtime::enter(guard) : nullptr;
  if (rt != nullptr) {
    if (rt->engine().free(dptr) == FreeOutcome::kFreed) return CUDA_SUCCESS;
    if (!rt->engine().forget_passthrough(dptr)) {
      rt->engine().forget_foreign(ForeignKind::kStreamOrdered, dptr);
    }
  }
  return real(dptr);
}

CUresult peer_enabled(const Reentry& guard, CUresult rc, CUcontext peerContext) {
  if (rc != CUDA_SUCCESS && rc != CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED) return rc;
  Runtime* rt = Runtime::enter(guard);
  if (rt == nullptr) return rc;
  int accessor = 0;
  int owner = 0;
  Driver& driver = rt->driver();
  if (driver.current_device(&accessor) == kDrvOk &&
      driver.context_device(peerContext, &owner) == kDrvOk) {
    rt->engine().grant_peer(accessor, owner);
  }
  return rc;
}

CUresult peer_disabled(const Reentry& guard, CUresult rc, CUcontext peerContext) {
  Runtime* rt = rc == CUDA_SUCCESS ? Runtime::enter(guard) : nullptr;
  int accessor = 0;
  int owner = 0;
  if (rt != nullptr && rt->driver().current_device(&accessor) == kDrvOk &&
      rt->driver().context_device(peerContext, &owner) == kDrvOk) {
    rt->engine().revoke_peer(accessor, owner);
  }
  return rc;
}

CUresult ipc_get_mem_handle(const Reentry& guard, CUresult (*real)(CUipcMemHandle*, CUdeviceptr),
                            CUipcMemHandle* pHandle, CUdeviceptr dptr) {
  Runtime* rt = Runtime::enter(guard);
  if (rt != nullptr) {
    if (std::optional<RegionInfo> r = rt->engine().region_containing(dptr)) {
      GS_WARN(
          "legacy IPC (cudaIpcGetMemHandle/cuIpcGetMemHandle) asked for 0x%llx, in region %llu "
          "(tag %s): memory that can sleep cannot be shared that way. Leave such allocations "
          "to the CUDA allocator with a pass-through rule (docs/tagging.md)",
          static_cast<unsigned long long>(dptr), static_cast<unsigned long long>(r->id),
          r->tag.c_str());
      return CUDA_ERROR_NOT_SUPPORTED;
    }
  }
  return real(pHandle, dptr);
}

CUresult stream_ordered_allocated(CUresult rc, CUdeviceptr* dptr, size_t bytes) {
  if (rc != CUDA_SUCCESS || dptr == nullptr) return rc;
  Reentry guard;
  if (Runtime* rt = Runtime::enter(guard)) {
    rt->engine().note_foreign(ForeignKind::kStreamOrdered, *dptr, bytes);
  }
  return rc;
}

void stream_ordered_freeing(CUdeviceptr dptr) {
  Reentry guard;
  if (Runtime* rt = dptr != 0 ? Runtime::enter(guard) : nullptr) {
    rt->engine().forget_foreign(ForeignKind::kStreamOrdered, dptr);
  }
}

CUresult mem_created(const Reentry& guard, std::uintptr_t call_site, CUresult rc,
                     CUresult (*real)(CUmemGenericAllocationHandle*, size_t,
                                      const CUmemAllocationProp*, unsigned long long),
                     CUmemGenericAllocationHandle* handle, size_t size,
                     const CUmemAllocationProp* prop, unsigned long long flags) {
  if (rc != CUDA_SUCCESS || handle == nullptr || prop == nullptr) return rc;
  Runtime* rt = Runtime::enter(guard);
  if (rt == nullptr) return rc;
  Engine& engine = rt->engine();
  // The program must never get a value it already holds for a handle whose memory moved.
  CUmemGenericAllocationHandle spare[4];
  int spares = 0;
  while (engine.app_key_taken(*handle) && spares < 4) {
    spare[spares++] = *handle;
    if (real(handle, size, prop, flags) != CUDA_SUCCESS) break;
  }
  for (int i = 0; i < spares; ++i)
    rt->driver().release(spare[i]);
  if (engine.app_key_taken(*handle)) return CUDA_ERROR_OUT_OF_MEMORY;
  const int device = prop->location.type == CU_MEM_LOCATION_TYPE_DEVICE ? prop->location.id : -1;
  LiveSite site(rt->driver(), rt->options().python_stacks);
  engine.app_created(*handle, size, device, prop, sizeof(*prop), call_site, &site);
  return rc;
}

CUresult mem_release(const Reentry& guard, CUresult (*real)(CUmemGenericAllocationHandle),
                     CUmemGenericAllocationHandle handle) {
  Runtime* rt = Runtime::enter(guard);
  if (rt == nullptr) return real(handle);
  PhysHandle current = 0;
  switch (rt->engine().app_release(handle, &current)) {
    case Engine::AppRelease::kNotOurs:
      return real(handle);
    case Engine::AppRelease::kReleaseReal:
      return real(current);
    case Engine::AppRelease::kNothingToRelease:
    case Engine::AppRelease::kStillHeld:
      return CUDA_SUCCESS;
  }
  return CUDA_SUCCESS;
}

CUresult mem_map(const Reentry& guard,
                 CUresult (*real)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
                                  unsigned long long),
                 CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                 unsigned long long flags) {
  Runtime* rt = Runtime::enter(guard);
  if (rt == nullptr) return real(ptr, size, offset, handle, flags);
  PhysHandle current = 0;
  switch (rt->engine().app_prepare_map(handle, &current)) {
    case Engine::AppState::kUnknown:
      return real(ptr, size, offset, handle, flags);
    case Engine::AppState::kAsleep:
      return refuse_asleep("cuMemMap", handle);
    case Engine::AppState::kLost:
      return CUDA_ERROR_OUT_OF_MEMORY;
    case Engine::AppState::kResident:
      break;
  }
  CUresult rc = real(ptr, size, offset, current, flags);
  if (rc == CUDA_SUCCESS) rt->engine().app_mapped(ptr, size, offset, handle);
  return rc;
}

CUresult mem_unmap(const Reentry& guard, CUresult (*real)(CUdeviceptr, size_t), CUdeviceptr ptr,
                   size_t size) {
  Runtime* rt = Runtime::enter(guard);
  if (rt == nullptr) return real(ptr, size);
  if (rt->engine().app_unmap(ptr) == Engine::AppUnmap::kAlreadyUnmapped) return CUDA_SUCCESS;
  return real(ptr, size);
}

CUresult mem_set_access(const Reentry& guard,
                        CUresult (*real)(CUdeviceptr, size_t, const CUmemAccessDesc*, size_t),
                        CUdeviceptr ptr, size_t size, const CUmemAccessDesc* desc, size_t count) {
  Runtime* rt = Runtime::enter(guard);
  if (rt == nullptr || desc == nullptr) return real(ptr, size, desc, count);
  if (!rt->engine().app_access_allowed(ptr, size)) return refuse_asleep("cuMemSetAccess", ptr);
  CUresult rc = real(ptr, size, desc, count);
  if (rc != CUDA_SUCCESS) return rc;
  std::vector<std::pair<int, int>> device_flags;
  for (size_t i = 0; i < count; ++i) {
    if (desc[i].location.type == CU_MEM_LOCATION_TYPE_DEVICE) {
      device_flags.emplace_back(desc[i].location.id, static_cast<int>(desc[i].flags));
    }
  }
  rt->engine().app_access_set(ptr, size, device_flags);
  return rc;
}

CUresult handle_retained(const Reentry& guard, CUresult rc, CUmemGenericAllocationHandle* handle) {
  if (rc != CUDA_SUCCESS || handle == nullptr) return rc;
  Runtime* rt = Runtime::enter(guard);
  if (rt == nullptr) return rc;
  const std::uint64_t key = rt->engine().app_key_of(*handle);
  if (key != *handle || rt->engine().app_key_taken(key)) {
    // The driver's handle carries one reference on the program's behalf however many it holds,
    // so that a sleep can let the memory go: drop the new one unless it is that one.
    if (rt->engine().app_retained(key) > 0) rt->driver().release(*handle);
    *handle = key;
  }
  return rc;
}

CUresult allocation_properties(const Reentry& guard,
                               CUresult (*real)(CUmemAllocationProp*, CUmemGenericAllocationHandle),
                               CUmemAllocationProp* prop, CUmemGenericAllocationHandle handle) {
  Runtime* rt = Runtime::enter(guard);
  PhysHandle current = 0;
  if (rt != nullptr && rt->engine().app_current(handle, &current) == Engine::AppState::kResident) {
    return real(prop, current);
  }
  return real(prop, handle);
}

CUresult export_shareable(const Reentry& guard,
                          CUresult (*real)(void*, CUmemGenericAllocationHandle,
                                           CUmemAllocationHandleType, unsigned long long),
                          void* shareableHandle, CUmemGenericAllocationHandle handle,
                          CUmemAllocationHandleType handleType, unsigned long long flags) {
  Runtime* rt = Runtime::enter(guard);
  if (rt == nullptr) return real(shareableHandle, handle, handleType, flags);
  PhysHandle current = 0;
  switch (rt->engine().app_pin(handle, "exported to another process", &current)) {
    case Engine::AppState::kUnknown:
      return real(shareableHandle, handle, handleType, flags);
    case Engine::AppState::kAsleep:
      return refuse_asleep("cuMemExportToShareableHandle", handle);
    case Engine::AppState::kLost:
      return CUDA_ERROR_INVALID_VALUE;
    case Engine::AppState::kResident:
      break;
  }
  return real(shareableHandle, current, handleType, flags);
}

CUresult multicast_bind(const Reentry& guard,
                        CUresult (*real)(CUmemGenericAllocationHandle, size_t,
                                         CUmemGenericAllocationHandle, size_t, size_t,
                                         unsigned long long),
                        CUmemGenericAllocationHandle mcHandle, size_t mcOffset,
                        CUmemGenericAllocationHandle memHandle, size_t memOffset, size_t size,
                        unsigned long long flags) {
  Runtime* rt = Runtime::enter(guard);
  if (rt == nullptr) return real(mcHandle, mcOffset, memHandle, memOffset, size, flags);
  PhysHandle current = 0;
  switch (rt->engine().app_pin(memHandle, "bound to a multicast object", &current)) {
    case Engine::AppState::kUnknown:
      return real(mcHandle, mcOffset, memHandle, memOffset, size, flags);
    case Engine::AppState::kAsleep:
      return refuse_asleep("cuMulticastBindMem", memHandle);
    case Engine::AppState::kLost:
      return CUDA_ERROR_INVALID_VALUE;
    case Engine::AppState::kResident:
      break;
  }
  return real(mcHandle, mcOffset, current, memOffset, size, flags);
}

}  // namespace gpusleep::cuda_calls

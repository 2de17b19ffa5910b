// Hook bodies. Each takes a Reentry guard (host/process.h), the only way to reach the runtime, and
// hands the call to host/cuda_calls.h; a call made while the library itself is inside a hook goes
// straight to the real function. Only the lookups that hand back the library's own wrappers are
// answered here.
#include "hooks/runtime_calls.h"

#include "driver/real_runtime.h"
#include "hooks/driver_symbols.h"
#include "host/cuda_calls.h"
#include "host/process.h"

namespace gpusleep::hooks {

cudaError_t cudaMalloc(std::uintptr_t call_site, void** devPtr, size_t size) {
  Reentry guard;
  return cuda_calls::runtime_malloc(guard, call_site, devPtr, size);
}

cudaError_t cudaFree(std::uintptr_t /*call_site*/, void* devPtr) {
  Reentry guard;
  return cuda_calls::runtime_free(guard, devPtr);
}

cudaError_t cudaGetDriverEntryPoint(std::uintptr_t /*call_site*/, const char* symbol,
                                    void** funcPtr, unsigned long long flags,
                                    cudaDriverEntryPointQueryResult* driverStatus) {
  const RealRuntime& real = real_runtime();
  if (real.cudaGetDriverEntryPoint == nullptr) return cudaErrorNotSupported;
  cudaError_t rc = real.cudaGetDriverEntryPoint(symbol, funcPtr, flags, driverStatus);
  if (rc != cudaSuccess || funcPtr == nullptr || *funcPtr == nullptr) return rc;
  int version = 0;  // it answers for the runtime's own CUDA version
  if (real.cudaRuntimeGetVersion == nullptr || real.cudaRuntimeGetVersion(&version) != cudaSuccess)
    return rc;
  *funcPtr = driver_hooks::for_runtime_entry(symbol, version, *funcPtr);
  return rc;
}

cudaError_t cudaGetDriverEntryPointByVersion(std::uintptr_t /*call_site*/, const char* symbol,
                                             void** funcPtr, unsigned int cudaVersion,
                                             unsigned long long flags,
                                             cudaDriverEntryPointQueryResult* driverStatus) {
  const RealRuntime& real = real_runtime();
  if (real.cudaGetDriverEntryPointByVersion == nullptr) return cudaErrorNotSupported;
  cudaError_t rc =
      real.cudaGetDriverEntryPointByVersion(symbol, funcPtr, cudaVersion, flags, driverStatus);
  if (rc != cudaSuccess || funcPtr == nullptr || *funcPtr == nullptr) return rc;
  *funcPtr = driver_hooks::for_runtime_entry(symbol, static_cast<int>(cudaVersion), *funcPtr);
  return rc;
}

// ---- driver entry points (driver_symbols.h) ----

CUresult cuGetProcAddress(std::uintptr_t, CUresult (*real)(const char*, void**, int, cuuint64_t),
                          const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags) {
  CUresult rc = real(symbol, pfn, cudaVersion, flags);
  if (rc == CUDA_SUCCESS && pfn != nullptr && *pfn != nullptr) {
    *pfn = driver_hooks::for_request(symbol, cudaVersion, flags, *pfn);
  }
  return rc;
}

CUresult cuGetProcAddress_v2(std::uintptr_t,
                             CUresult (*real)(const char*, void**, int, cuuint64_t,
                                              CUdriverProcAddressQueryResult*),
                             const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags,
                             CUdriverProcAddressQueryResult* symbolStatus) {
  CUresult rc = real(symbol, pfn, cudaVersion, flags, symbolStatus);
  if (rc == CUDA_SUCCESS && pfn != nullptr && *pfn != nullptr) {
    *pfn = driver_hooks::for_request(symbol, cudaVersion, flags, *pfn);
  }
  return rc;
}

CUresult cuMemAlloc_v2(std::uintptr_t call_site, CUresult (*real)(CUdeviceptr*, size_t),
                       CUdeviceptr* dptr, size_t bytesize) {
  Reentry guard;
  return cuda_calls::mem_alloc(guard, call_site, real, dptr, bytesize);
}

CUresult cuMemAllocPitch_v2(std::uintptr_t call_site,
                            CUresult (*real)(CUdeviceptr*, size_t*, size_t, size_t, unsigned int),
                            CUdeviceptr* dptr, size_t* pPitch, size_t WidthInBytes, size_t Height,
                            unsigned int ElementSizeBytes) {
  Reentry guard;
  return cuda_calls::mem_alloc_pitch(guard, call_site, real, dptr, pPitch, WidthInBytes, Height,
                                     ElementSizeBytes);
}

CUresult cuMemFree_v2(std::uintptr_t, CUresult (*real)(CUdeviceptr), CUdeviceptr dptr) {
  Reentry guard;
  return cuda_calls::mem_free(guard, real, dptr);
}

CUresult cuCtxEnablePeerAccess(std::uintptr_t, CUresult (*real)(CUcontext, unsigned int),
                               CUcontext peerContext, unsigned int Flags) {
  Reentry guard;
  return cuda_calls::peer_enabled(guard, real(peerContext, Flags), peerContext);
}

CUresult cuCtxDisablePeerAccess(std::uintptr_t, CUresult (*real)(CUcontext),
                                CUcontext peerContext) {
  Reentry guard;
  return cuda_calls::peer_disabled(guard, real(peerContext), peerContext);
}

CUresult cuIpcGetMemHandle(std::uintptr_t, CUresult (*real)(CUipcMemHandle*, CUdeviceptr),
                           CUipcMemHandle* pHandle, CUdeviceptr dptr) {
  Reentry guard;
  return cuda_calls::ipc_get_mem_handle(guard, real, pHandle, dptr);
}

// Stream-ordered memory: the driver's call runs first, outside any guard.

CUresult cuMemAllocAsync(std::uintptr_t, CUresult (*real)(CUdeviceptr*, size_t, CUstream),
                         CUdeviceptr* dptr, size_t bytesize, CUstream hStream) {
  return cuda_calls::stream_ordered_allocated(real(dptr, bytesize, hStream), dptr, bytesize);
}

CUresult cuMemAllocAsync_ptsz(std::uintptr_t, CUresult (*real)(CUdeviceptr*, size_t, CUstream),
                              CUdeviceptr* dptr, size_t bytesize, CUstream hStream) {
  return cuda_calls::stream_ordered_allocated(real(dptr, bytesize, hStream), dptr, bytesize);
}

CUresult cuMemAllocFromPoolAsync(std::uintptr_t,
                                 CUresult (*real)(CUdeviceptr*, size_t, CUmemoryPool, CUstream),
                                 CUdeviceptr* dptr, size_t bytesize, CUmemoryPool pool,
                                 CUstream hStream) {
  return cuda_calls::stream_ordered_allocated(real(dptr, bytesize, pool, hStream), dptr, bytesize);
}

CUresult cuMemAllocFromPoolAsync_ptsz(
    std::uintptr_t, CUresult (*real)(CUdeviceptr*, size_t, CUmemoryPool, CUstream),
    CUdeviceptr* dptr, size_t bytesize, CUmemoryPool pool, CUstream hStream) {
  return cuda_calls::stream_ordered_allocated(real(dptr, bytesize, pool, hStream), dptr, bytesize);
}

CUresult cuMemFreeAsync(std::uintptr_t, CUresult (*real)(CUdeviceptr, CUstream), CUdeviceptr dptr,
                        CUstream hStream) {
  cuda_calls::stream_ordered_freeing(dptr);
  return real(dptr, hStream);
}

CUresult cuMemFreeAsync_ptsz(std::uintptr_t, CUresult (*real)(CUdeviceptr, CUstream),
                             CUdeviceptr dptr, CUstream hStream) {
  cuda_calls::stream_ordered_freeing(dptr);
  return real(dptr, hStream);
}

// ---- memory the program creates and maps itself: adopted when it can sleep ----

CUresult cuMemCreate(std::uintptr_t call_site,
                     CUresult (*real)(CUmemGenericAllocationHandle*, size_t,
                                      const CUmemAllocationProp*, unsigned long long),
                     CUmemGenericAllocationHandle* handle, size_t size,
                     const CUmemAllocationProp* prop, unsigned long long flags) {
  CUresult rc = real(handle, size, prop, flags);  // outside the guard
  Reentry guard;
  return cuda_calls::mem_created(guard, call_site, rc, real, handle, size, prop, flags);
}

CUresult cuMemRelease(std::uintptr_t, CUresult (*real)(CUmemGenericAllocationHandle),
                      CUmemGenericAllocationHandle handle) {
  Reentry guard;
  return cuda_calls::mem_release(guard, real, handle);
}

CUresult cuMemMap(std::uintptr_t,
                  CUresult (*real)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
                                   unsigned long long),
                  CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                  unsigned long long flags) {
  Reentry guard;
  return cuda_calls::mem_map(guard, real, ptr, size, offset, handle, flags);
}

CUresult cuMemUnmap(std::uintptr_t, CUresult (*real)(CUdeviceptr, size_t), CUdeviceptr ptr,
                    size_t size) {
  Reentry guard;
  return cuda_calls::mem_unmap(guard, real, ptr, size);
}

CUresult cuMemSetAccess(std::uintptr_t,
                        CUresult (*real)(CUdeviceptr, size_t, const CUmemAccessDesc*, size_t),
                        CUdeviceptr ptr, size_t size, const CUmemAccessDesc* desc, size_t count) {
  Reentry guard;
  return cuda_calls::mem_set_access(guard, real, ptr, size, desc, count);
}

CUresult cuMemRetainAllocationHandle(std::uintptr_t,
                                     CUresult (*real)(CUmemGenericAllocationHandle*, void*),
                                     CUmemGenericAllocationHandle* handle, void* addr) {
  CUresult rc = real(handle, addr);  // outside the guard
  Reentry guard;
  return cuda_calls::handle_retained(guard, rc, handle);
}

CUresult cuMemGetAllocationPropertiesFromHandle(
    std::uintptr_t, CUresult (*real)(CUmemAllocationProp*, CUmemGenericAllocationHandle),
    CUmemAllocationProp* prop, CUmemGenericAllocationHandle handle) {
  Reentry guard;
  return cuda_calls::allocation_properties(guard, real, prop, handle);
}

CUresult cuMemExportToShareableHandle(std::uintptr_t,
                                      CUresult (*real)(void*, CUmemGenericAllocationHandle,
                                                       CUmemAllocationHandleType,
                                                       unsigned long long),
                                      void* shareableHandle, CUmemGenericAllocationHandle handle,
                                      CUmemAllocationHandleType handleType,
                                      unsigned long long flags) {
  Reentry guard;
  return cuda_calls::export_shareable(guard, real, shareableHandle, handle, handleType, flags);
}

CUresult cuMulticastBindMem(std::uintptr_t,
                            CUresult (*real)(CUmemGenericAllocationHandle, size_t,
                                             CUmemGenericAllocationHandle, size_t, size_t,
                                             unsigned long long),
                            CUmemGenericAllocationHandle mcHandle, size_t mcOffset,
                            CUmemGenericAllocationHandle memHandle, size_t memOffset, size_t size,
                            unsigned long long flags) {
  Reentry guard;
  return cuda_calls::multicast_bind(guard, real, mcHandle, mcOffset, memHandle, memOffset, size,
                                    flags);
}

}  // namespace gpusleep::hooks

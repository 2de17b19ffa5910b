// What the CUDA hooks do once their guard is held: decide between a managed region and the real
// allocator, turn the engine's outcome into a CUDA error code, and keep the engine's books on
// memory that passes through. The hooks (hooks/runtime_calls.cpp) call one of these each.
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "host/process.h"

namespace gpusleep::cuda_calls {

// Each takes the hook's guard (it reaches the runtime only through it) and, for the driver's
// entry points, the driver's function the hook stands for; each returns what the hook returns.

cudaError_t runtime_malloc(const Reentry& guard, std::uintptr_t call_site, void** devPtr,
                           size_t size);
cudaError_t runtime_free(const Reentry& guard, void* devPtr);

CUresult mem_alloc(const Reentry& guard, std::uintptr_t call_site,
                   CUresult (*real)(CUdeviceptr*, size_t), CUdeviceptr* dptr, size_t bytesize);
CUresult mem_alloc_pitch(const Reentry& guard, std::uintptr_t call_site,
                         CUresult (*real)(CUdeviceptr*, size_t*, size_t, size_t, unsigned int),
                         CUdeviceptr* dptr, size_t* pPitch, size_t WidthInBytes, size_t Height,
                         unsigned int ElementSizeBytes);
CUresult mem_free(const Reentry& guard, CUresult (*real)(CUdeviceptr), CUdeviceptr dptr);

// Peer access: `rc` is what the driver answered; the engine learns the grant or the revocation.
CUresult peer_enabled(const Reentry& guard, CUresult rc, CUcontext peerContext);
CUresult peer_disabled(const Reentry& guard, CUresult rc, CUcontext peerContext);

CUresult ipc_get_mem_handle(const Reentry& guard, CUresult (*real)(CUipcMemHandle*, CUdeviceptr),
                            CUipcMemHandle* pHandle, CUdeviceptr dptr);

// Stream-ordered memory: `rc` is the driver's answer to the allocation; the engine notes it, or
// forgets the pointer being freed.
CUresult stream_ordered_allocated(CUresult rc, CUdeviceptr* dptr, size_t bytes);
void stream_ordered_freeing(CUdeviceptr dptr);

// Memory the program creates and maps itself. `rc` is the driver's answer to the creation or
// retention, made before the guard was taken.
CUresult mem_created(const Reentry& guard, std::uintptr_t call_site, CUresult rc,
                     CUresult (*real)(CUmemGenericAllocationHandle*, size_t,
                                      const CUmemAllocationProp*, unsigned long long),
                     CUmemGenericAllocationHandle* handle, size_t size,
                     const CUmemAllocationProp* prop, unsigned long long flags);
CUresult mem_release(const Reentry& guard, CUresult (*real)(CUmemGenericAllocationHandle),
                     CUmemGenericAllocationHandle handle);
CUresult mem_map(const Reentry& guard,
                 CUresult (*real)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
                                  unsigned long long),
                 CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                 unsigned long long flags);
CUresult mem_unmap(const Reentry& guard, CUresult (*real)(CUdeviceptr, size_t), CUdeviceptr ptr,
                   size_t size);
CUresult mem_set_access(const Reentry& guard,
                        CUresult (*real)(CUdeviceptr, size_t, const CUmemAccessDesc*, size_t),
                        CUdeviceptr ptr, size_t size, const CUmemAccessDesc* desc, size_t count);
CUresult handle_retained(const Reentry& guard, CUresult rc, CUmemGenericAllocationHandle* handle);
CUresult allocation_properties(const Reentry& guard,
                               CUresult (*real)(CUmemAllocationProp*, CUmemGenericAllocationHandle),
                               CUmemAllocationProp* prop, CUmemGenericAllocationHandle handle);
CUresult export_shareable(const Reentry& guard,
                          CUresult (*real)(void*, CUmemGenericAllocationHandle,
                                           CUmemAllocationHandleType, unsigned long long),
                          void* shareableHandle, CUmemGenericAllocationHandle handle,
                          CUmemAllocationHandleType handleType, unsigned long long flags);
CUresult multicast_bind(const Reentry& guard,
                        CUresult (*real)(CUmemGenericAllocationHandle, size_t,
                                         CUmemGenericAllocationHandle, size_t, size_t,
                                         unsigned long long),
                        CUmemGenericAllocationHandle mcHandle, size_t mcOffset,
                        CUmemGenericAllocationHandle memHandle, size_t memOffset, size_t size,
                        unsigned long long flags);

}  // namespace gpusleep::cuda_calls

// The one list of CUDA driver entry points the library substitutes (X-macro). From it come the
// exported driver symbols (for programs linked against libcuda), the wrappers handed back by the
// resolver hooks (dlsym, cuGetProcAddress, the runtime's cudaGetDriverEntryPoint*), the table
// that decides which lookups get a wrapper (entry_points.h) and the bodies' declarations.
// Everything else a program asks the driver for is left alone.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "entry_points.h"
#include "macro_util.h"

// cuda.h maps API names to their newest ABI with macros; this list names each ABI itself.
#undef cuGetProcAddress
#undef cuMemAllocAsync
#undef cuMemAllocFromPoolAsync
#undef cuMemFreeAsync

// X(return type, ABI symbol, API name, first version, last version, stream variant,
//   parameter list, argument list)
#define GPUSLEEP_DRIVER_HOOKS(X)                                                                   \
  X(CUresult, cuGetProcAddress, "cuGetProcAddress", 11030, 11999, kAny,                            \
    (const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags),                           \
    (symbol, pfn, cudaVersion, flags))                                                             \
  X(CUresult, cuGetProcAddress_v2, "cuGetProcAddress", 12000, kNoLimit, kAny,                      \
    (const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags,                            \
     CUdriverProcAddressQueryResult* symbolStatus),                                                \
    (symbol, pfn, cudaVersion, flags, symbolStatus))                                               \
  X(CUresult, cuMemAlloc_v2, "cuMemAlloc", 3020, kNoLimit, kAny,                                   \
    (CUdeviceptr * dptr, size_t bytesize), (dptr, bytesize))                                       \
  X(CUresult, cuMemAllocPitch_v2, "cuMemAllocPitch", 3020, kNoLimit, kAny,                         \
    (CUdeviceptr * dptr, size_t * pPitch, size_t WidthInBytes, size_t Height,                      \
     unsigned int ElementSizeBytes),                                                               \
    (dptr, pPitch, WidthInBytes, Height, ElementSizeBytes))                                        \
  X(CUresult, cuMemFree_v2, "cuMemFree", 3020, kNoLimit, kAny, (CUdeviceptr dptr), (dptr))         \
  X(CUresult, cuCtxEnablePeerAccess, "cuCtxEnablePeerAccess", 4000, kNoLimit, kAny,                \
    (CUcontext peerContext, unsigned int Flags), (peerContext, Flags))                             \
  X(CUresult, cuCtxDisablePeerAccess, "cuCtxDisablePeerAccess", 4000, kNoLimit, kAny,              \
    (CUcontext peerContext), (peerContext))                                                        \
  X(CUresult, cuIpcGetMemHandle, "cuIpcGetMemHandle", 4010, kNoLimit, kAny,                        \
    (CUipcMemHandle * pHandle, CUdeviceptr dptr), (pHandle, dptr))                                 \
  X(CUresult, cuMemAllocAsync, "cuMemAllocAsync", 11020, kNoLimit, kLegacy,                        \
    (CUdeviceptr * dptr, size_t bytesize, CUstream hStream), (dptr, bytesize, hStream))            \
  X(CUresult, cuMemAllocAsync_ptsz, "cuMemAllocAsync", 11020, kNoLimit, kPerThread,                \
    (CUdeviceptr * dptr, size_t bytesize, CUstream hStream), (dptr, bytesize, hStream))            \
  X(CUresult, cuMemAllocFromPoolAsync, "cuMemAllocFromPoolAsync", 11020, kNoLimit, kLegacy,        \
    (CUdeviceptr * dptr, size_t bytesize, CUmemoryPool pool, CUstream hStream),                    \
    (dptr, bytesize, pool, hStream))                                                               \
  X(CUresult, cuMemAllocFromPoolAsync_ptsz, "cuMemAllocFromPoolAsync", 11020, kNoLimit,            \
    kPerThread, (CUdeviceptr * dptr, size_t bytesize, CUmemoryPool pool, CUstream hStream),        \
    (dptr, bytesize, pool, hStream))                                                               \
  X(CUresult, cuMemFreeAsync, "cuMemFreeAsync", 11020, kNoLimit, kLegacy,                          \
    (CUdeviceptr dptr, CUstream hStream), (dptr, hStream))                                         \
  X(CUresult, cuMemFreeAsync_ptsz, "cuMemFreeAsync", 11020, kNoLimit, kPerThread,                  \
    (CUdeviceptr dptr, CUstream hStream), (dptr, hStream))                                         \
  X(CUresult, cuMemCreate, "cuMemCreate", 10020, kNoLimit, kAny,                                   \
    (CUmemGenericAllocationHandle * handle, size_t size, const CUmemAllocationProp* prop,          \
     unsigned long long flags),                                                                    \
    (handle, size, prop, flags))                                                                   \
  X(CUresult, cuMemRelease, "cuMemRelease", 10020, kNoLimit, kAny,                                 \
    (CUmemGenericAllocationHandle handle), (handle))                                               \
  X(CUresult, cuMemMap, "cuMemMap", 10020, kNoLimit, kAny,                                         \
    (CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,             \
     unsigned long long flags),                                                                    \
    (ptr, size, offset, handle, flags))                                                            \
  X(CUresult, cuMemUnmap, "cuMemUnmap", 10020, kNoLimit, kAny, (CUdeviceptr ptr, size_t size),     \
    (ptr, size))                                                                                   \
  X(CUresult, cuMemSetAccess, "cuMemSetAccess", 10020, kNoLimit, kAny,                             \
    (CUdeviceptr ptr, size_t size, const CUmemAccessDesc* desc, size_t count),                     \
    (ptr, size, desc, count))                                                                      \
  X(CUresult, cuMemRetainAllocationHandle, "cuMemRetainAllocationHandle", 11000, kNoLimit, kAny,   \
    (CUmemGenericAllocationHandle * handle, void* addr), (handle, addr))                           \
  X(CUresult, cuMemGetAllocationPropertiesFromHandle, "cuMemGetAllocationPropertiesFromHandle",    \
    10020, kNoLimit, kAny, (CUmemAllocationProp * prop, CUmemGenericAllocationHandle handle),      \
    (prop, handle))                                                                                \
  X(CUresult, cuMemExportToShareableHandle, "cuMemExportToShareableHandle", 10020, kNoLimit, kAny, \
    (void* shareableHandle, CUmemGenericAllocationHandle handle,                                   \
     CUmemAllocationHandleType handleType, unsigned long long flags),                              \
    (shareableHandle, handle, handleType, flags))                                                  \
  X(CUresult, cuMulticastBindMem, "cuMulticastBindMem", 12010, kNoLimit, kAny,                     \
    (CUmemGenericAllocationHandle mcHandle, size_t mcOffset,                                       \
     CUmemGenericAllocationHandle memHandle, size_t memOffset, size_t size,                        \
     unsigned long long flags),                                                                    \
    (mcHandle, mcOffset, memHandle, memOffset, size, flags))

namespace gpusleep::driver_hooks {

enum Slot : std::size_t {
#define GPUSLEEP_SLOT(ret, abi, api, since, until, variant, params, args) kSlot_##abi,
  GPUSLEEP_DRIVER_HOOKS(GPUSLEEP_SLOT)
#undef GPUSLEEP_SLOT
      kSlotCount
};

// The table of substituted entry points, with the driver's function learned for each.
EntryPointTable& table();
// The wrapper of `slot` (the library's exported function of that ABI name).
void* wrapper(std::size_t slot);
// True when `fn` is one of the wrappers.
bool is_wrapper(const void* fn);

// What a resolver hands back for a lookup that produced `real`: the wrapper when the lookup is one
// of the table's ABIs and `real` is the driver's function of it, `real` otherwise.
void* for_symbol(const char* abi_name, void* real);
void* for_request(const char* api, int version, std::uint64_t flags, void* real);
// For a pointer the CUDA runtime handed out (cudaGetDriverEntryPoint*), whose stream variant is
// not known: the wrapper of a slot that already learned `real`, or of the one slot of `api` at
// `version` when it takes no stream; `real` otherwise.
void* for_runtime_entry(const char* api, int version, void* real);

// The driver's function of `slot`; found with dlsym(RTLD_NEXT) when no lookup has shown it yet
// (a program linked against libcuda calls the exported wrapper directly). Null if none.
void* real_or_next(std::size_t slot);

}  // namespace gpusleep::driver_hooks

// The bodies, in interpose.cpp: each receives its caller's address and the driver's function it
// stands for.
namespace gpusleep::hooks {
#define GPUSLEEP_BODY_DECL(ret, abi, api, since, until, variant, params, args) \
  ret abi GPUSLEEP_PREPEND(std::uintptr_t call_site, GPUSLEEP_PREPEND(ret(*real) params, params));
GPUSLEEP_DRIVER_HOOKS(GPUSLEEP_BODY_DECL)
#undef GPUSLEEP_BODY_DECL
}  // namespace gpusleep::hooks

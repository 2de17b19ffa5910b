// The one list of CUDA driver entry points the library substitutes (X-macro). From it come the
// exported driver symbols (for programs linked against libcuda), the wrappers handed back by the
// resolver hooks (dlsym, cuGetProcAddress, the runtime's cudaGetDriverEntryPoint*), the table
// that decides which lookups get a wrapper (entry_points.h) and the bodies' declarations.
// Everything else a program asks the driver for is left alone.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "hooks/entry_points.h"
#include "hooks/macro_util.h"

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

// GPU work the program submits: kernel and graph launches, copies and memsets. Each passes the
// gate (gate.h) and goes on to the driver's function unchanged.
#define GPUSLEEP_GATED_DRIVER_HOOKS(X)                                                            \
  X(CUresult, cuLaunchKernel, "cuLaunchKernel", 4000, kNoLimit, kLegacy,                          \
    (CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ,           \
     unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ,                      \
     unsigned int sharedMemBytes, CUstream hStream, void** kernelParams, void** extra),           \
    (f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream,   \
     kernelParams, extra))                                                                        \
  X(CUresult, cuLaunchKernel_ptsz, "cuLaunchKernel", 7000, kNoLimit, kPerThread,                  \
    (CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ,           \
     unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ,                      \
     unsigned int sharedMemBytes, CUstream hStream, void** kernelParams, void** extra),           \
    (f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream,   \
     kernelParams, extra))                                                                        \
  X(CUresult, cuLaunchKernelEx, "cuLaunchKernelEx", 11060, kNoLimit, kLegacy,                     \
    (const CUlaunchConfig* config, CUfunction f, void** kernelParams, void** extra),              \
    (config, f, kernelParams, extra))                                                             \
  X(CUresult, cuLaunchKernelEx_ptsz, "cuLaunchKernelEx", 11060, kNoLimit, kPerThread,             \
    (const CUlaunchConfig* config, CUfunction f, void** kernelParams, void** extra),              \
    (config, f, kernelParams, extra))                                                             \
  X(CUresult, cuLaunchCooperativeKernel, "cuLaunchCooperativeKernel", 9000, kNoLimit, kLegacy,    \
    (CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ,           \
     unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ,                      \
     unsigned int sharedMemBytes, CUstream hStream, void** kernelParams),                         \
    (f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream,   \
     kernelParams))                                                                               \
  X(CUresult, cuLaunchCooperativeKernel_ptsz, "cuLaunchCooperativeKernel", 9000, kNoLimit,        \
    kPerThread,                                                                                   \
    (CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ,           \
     unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ,                      \
     unsigned int sharedMemBytes, CUstream hStream, void** kernelParams),                         \
    (f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream,   \
     kernelParams))                                                                               \
  X(CUresult, cuGraphLaunch, "cuGraphLaunch", 10000, kNoLimit, kLegacy,                           \
    (CUgraphExec hGraphExec, CUstream hStream), (hGraphExec, hStream))                            \
  X(CUresult, cuGraphLaunch_ptsz, "cuGraphLaunch", 10000, kNoLimit, kPerThread,                   \
    (CUgraphExec hGraphExec, CUstream hStream), (hGraphExec, hStream))                            \
  X(CUresult, cuMemcpy, "cuMemcpy", 4000, kNoLimit, kLegacy,                                      \
    (CUdeviceptr dst, CUdeviceptr src, size_t ByteCount), (dst, src, ByteCount))                  \
  X(CUresult, cuMemcpy_ptds, "cuMemcpy", 7000, kNoLimit, kPerThread,                              \
    (CUdeviceptr dst, CUdeviceptr src, size_t ByteCount), (dst, src, ByteCount))                  \
  X(CUresult, cuMemcpyAsync, "cuMemcpyAsync", 4000, kNoLimit, kLegacy,                            \
    (CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream),                       \
    (dst, src, ByteCount, hStream))                                                               \
  X(CUresult, cuMemcpyAsync_ptsz, "cuMemcpyAsync", 7000, kNoLimit, kPerThread,                    \
    (CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream),                       \
    (dst, src, ByteCount, hStream))                                                               \
  X(CUresult, cuMemcpyPeer, "cuMemcpyPeer", 4000, kNoLimit, kLegacy,                              \
    (CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice, CUcontext srcContext,    \
     size_t ByteCount),                                                                           \
    (dstDevice, dstContext, srcDevice, srcContext, ByteCount))                                    \
  X(CUresult, cuMemcpyPeer_ptds, "cuMemcpyPeer", 7000, kNoLimit, kPerThread,                      \
    (CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice, CUcontext srcContext,    \
     size_t ByteCount),                                                                           \
    (dstDevice, dstContext, srcDevice, srcContext, ByteCount))                                    \
  X(CUresult, cuMemcpyPeerAsync, "cuMemcpyPeerAsync", 4000, kNoLimit, kLegacy,                    \
    (CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice, CUcontext srcContext,    \
     size_t ByteCount, CUstream hStream),                                                         \
    (dstDevice, dstContext, srcDevice, srcContext, ByteCount, hStream))                           \
  X(CUresult, cuMemcpyPeerAsync_ptsz, "cuMemcpyPeerAsync", 7000, kNoLimit, kPerThread,            \
    (CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice, CUcontext srcContext,    \
     size_t ByteCount, CUstream hStream),                                                         \
    (dstDevice, dstContext, srcDevice, srcContext, ByteCount, hStream))                           \
  X(CUresult, cuMemcpyHtoD_v2, "cuMemcpyHtoD", 3020, kNoLimit, kLegacy,                           \
    (CUdeviceptr dstDevice, const void* srcHost, size_t ByteCount),                               \
    (dstDevice, srcHost, ByteCount))                                                              \
  X(CUresult, cuMemcpyHtoD_v2_ptds, "cuMemcpyHtoD", 7000, kNoLimit, kPerThread,                   \
    (CUdeviceptr dstDevice, const void* srcHost, size_t ByteCount),                               \
    (dstDevice, srcHost, ByteCount))                                                              \
  X(CUresult, cuMemcpyDtoH_v2, "cuMemcpyDtoH", 3020, kNoLimit, kLegacy,                           \
    (void* dstHost, CUdeviceptr srcDevice, size_t ByteCount), (dstHost, srcDevice, ByteCount))    \
  X(CUresult, cuMemcpyDtoH_v2_ptds, "cuMemcpyDtoH", 7000, kNoLimit, kPerThread,                   \
    (void* dstHost, CUdeviceptr srcDevice, size_t ByteCount), (dstHost, srcDevice, ByteCount))    \
  X(CUresult, cuMemcpyDtoD_v2, "cuMemcpyDtoD", 3020, kNoLimit, kLegacy,                           \
    (CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount),                             \
    (dstDevice, srcDevice, ByteCount))                                                            \
  X(CUresult, cuMemcpyDtoD_v2_ptds, "cuMemcpyDtoD", 7000, kNoLimit, kPerThread,                   \
    (CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount),                             \
    (dstDevice, srcDevice, ByteCount))                                                            \
  X(CUresult, cuMemcpyHtoDAsync_v2, "cuMemcpyHtoDAsync", 3020, kNoLimit, kLegacy,                 \
    (CUdeviceptr dstDevice, const void* srcHost, size_t ByteCount, CUstream hStream),             \
    (dstDevice, srcHost, ByteCount, hStream))                                                     \
  X(CUresult, cuMemcpyHtoDAsync_v2_ptsz, "cuMemcpyHtoDAsync", 7000, kNoLimit, kPerThread,         \
    (CUdeviceptr dstDevice, const void* srcHost, size_t ByteCount, CUstream hStream),             \
    (dstDevice, srcHost, ByteCount, hStream))                                                     \
  X(CUresult, cuMemcpyDtoHAsync_v2, "cuMemcpyDtoHAsync", 3020, kNoLimit, kLegacy,                 \
    (void* dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream),                   \
    (dstHost, srcDevice, ByteCount, hStream))                                                     \
  X(CUresult, cuMemcpyDtoHAsync_v2_ptsz, "cuMemcpyDtoHAsync", 7000, kNoLimit, kPerThread,         \
    (void* dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream),                   \
    (dstHost, srcDevice, ByteCount, hStream))                                                     \
  X(CUresult, cuMemcpyDtoDAsync_v2, "cuMemcpyDtoDAsync", 3020, kNoLimit, kLegacy,                 \
    (CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream),           \
    (dstDevice, srcDevice, ByteCount, hStream))                                                   \
  X(CUresult, cuMemcpyDtoDAsync_v2_ptsz, "cuMemcpyDtoDAsync", 7000, kNoLimit, kPerThread,         \
    (CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream),           \
    (dstDevice, srcDevice, ByteCount, hStream))                                                   \
  X(CUresult, cuMemcpy2D_v2, "cuMemcpy2D", 3020, kNoLimit, kLegacy, (const CUDA_MEMCPY2D* pCopy), \
    (pCopy))                                                                                      \
  X(CUresult, cuMemcpy2D_v2_ptds, "cuMemcpy2D", 7000, kNoLimit, kPerThread,                       \
    (const CUDA_MEMCPY2D* pCopy), (pCopy))                                                        \
  X(CUresult, cuMemcpy2DUnaligned_v2, "cuMemcpy2DUnaligned", 3020, kNoLimit, kLegacy,             \
    (const CUDA_MEMCPY2D* pCopy), (pCopy))                                                        \
  X(CUresult, cuMemcpy2DUnaligned_v2_ptds, "cuMemcpy2DUnaligned", 7000, kNoLimit, kPerThread,     \
    (const CUDA_MEMCPY2D* pCopy), (pCopy))                                                        \
  X(CUresult, cuMemcpy2DAsync_v2, "cuMemcpy2DAsync", 3020, kNoLimit, kLegacy,                     \
    (const CUDA_MEMCPY2D* pCopy, CUstream hStream), (pCopy, hStream))                             \
  X(CUresult, cuMemcpy2DAsync_v2_ptsz, "cuMemcpy2DAsync", 7000, kNoLimit, kPerThread,             \
    (const CUDA_MEMCPY2D* pCopy, CUstream hStream), (pCopy, hStream))                             \
  X(CUresult, cuMemcpy3D_v2, "cuMemcpy3D", 3020, kNoLimit, kLegacy, (const CUDA_MEMCPY3D* pCopy), \
    (pCopy))                                                                                      \
  X(CUresult, cuMemcpy3D_v2_ptds, "cuMemcpy3D", 7000, kNoLimit, kPerThread,                       \
    (const CUDA_MEMCPY3D* pCopy), (pCopy))                                                        \
  X(CUresult, cuMemcpy3DAsync_v2, "cuMemcpy3DAsync", 3020, kNoLimit, kLegacy,                     \
    (const CUDA_MEMCPY3D* pCopy, CUstream hStream), (pCopy, hStream))                             \
  X(CUresult, cuMemcpy3DAsync_v2_ptsz, "cuMemcpy3DAsync", 7000, kNoLimit, kPerThread,             \
    (const CUDA_MEMCPY3D* pCopy, CUstream hStream), (pCopy, hStream))                             \
  X(CUresult, cuMemsetD8_v2, "cuMemsetD8", 3020, kNoLimit, kLegacy,                               \
    (CUdeviceptr dstDevice, unsigned char uc, size_t N), (dstDevice, uc, N))                      \
  X(CUresult, cuMemsetD8_v2_ptds, "cuMemsetD8", 7000, kNoLimit, kPerThread,                       \
    (CUdeviceptr dstDevice, unsigned char uc, size_t N), (dstDevice, uc, N))                      \
  X(CUresult, cuMemsetD16_v2, "cuMemsetD16", 3020, kNoLimit, kLegacy,                             \
    (CUdeviceptr dstDevice, unsigned short us, size_t N), (dstDevice, us, N))                     \
  X(CUresult, cuMemsetD16_v2_ptds, "cuMemsetD16", 7000, kNoLimit, kPerThread,                     \
    (CUdeviceptr dstDevice, unsigned short us, size_t N), (dstDevice, us, N))                     \
  X(CUresult, cuMemsetD32_v2, "cuMemsetD32", 3020, kNoLimit, kLegacy,                             \
    (CUdeviceptr dstDevice, unsigned int ui, size_t N), (dstDevice, ui, N))                       \
  X(CUresult, cuMemsetD32_v2_ptds, "cuMemsetD32", 7000, kNoLimit, kPerThread,                     \
    (CUdeviceptr dstDevice, unsigned int ui, size_t N), (dstDevice, ui, N))                       \
  X(CUresult, cuMemsetD8Async, "cuMemsetD8Async", 3020, kNoLimit, kLegacy,                        \
    (CUdeviceptr dstDevice, unsigned char uc, size_t N, CUstream hStream),                        \
    (dstDevice, uc, N, hStream))                                                                  \
  X(CUresult, cuMemsetD8Async_ptsz, "cuMemsetD8Async", 7000, kNoLimit, kPerThread,                \
    (CUdeviceptr dstDevice, unsigned char uc, size_t N, CUstream hStream),                        \
    (dstDevice, uc, N, hStream))                                                                  \
  X(CUresult, cuMemsetD16Async, "cuMemsetD16Async", 3020, kNoLimit, kLegacy,                      \
    (CUdeviceptr dstDevice, unsigned short us, size_t N, CUstream hStream),                       \
    (dstDevice, us, N, hStream))                                                                  \
  X(CUresult, cuMemsetD16Async_ptsz, "cuMemsetD16Async", 7000, kNoLimit, kPerThread,              \
    (CUdeviceptr dstDevice, unsigned short us, size_t N, CUstream hStream),                       \
    (dstDevice, us, N, hStream))                                                                  \
  X(CUresult, cuMemsetD32Async, "cuMemsetD32Async", 3020, kNoLimit, kLegacy,                      \
    (CUdeviceptr dstDevice, unsigned int ui, size_t N, CUstream hStream),                         \
    (dstDevice, ui, N, hStream))                                                                  \
  X(CUresult, cuMemsetD32Async_ptsz, "cuMemsetD32Async", 7000, kNoLimit, kPerThread,              \
    (CUdeviceptr dstDevice, unsigned int ui, size_t N, CUstream hStream),                         \
    (dstDevice, ui, N, hStream))                                                                  \
  X(CUresult, cuMemsetD2D8_v2, "cuMemsetD2D8", 3020, kNoLimit, kLegacy,                           \
    (CUdeviceptr dstDevice, size_t dstPitch, unsigned char uc, size_t Width, size_t Height),      \
    (dstDevice, dstPitch, uc, Width, Height))                                                     \
  X(CUresult, cuMemsetD2D8_v2_ptds, "cuMemsetD2D8", 7000, kNoLimit, kPerThread,                   \
    (CUdeviceptr dstDevice, size_t dstPitch, unsigned char uc, size_t Width, size_t Height),      \
    (dstDevice, dstPitch, uc, Width, Height))                                                     \
  X(CUresult, cuMemsetD2D16_v2, "cuMemsetD2D16", 3020, kNoLimit, kLegacy,                         \
    (CUdeviceptr dstDevice, size_t dstPitch, unsigned short us, size_t Width, size_t Height),     \
    (dstDevice, dstPitch, us, Width, Height))                                                     \
  X(CUresult, cuMemsetD2D16_v2_ptds, "cuMemsetD2D16", 7000, kNoLimit, kPerThread,                 \
    (CUdeviceptr dstDevice, size_t dstPitch, unsigned short us, size_t Width, size_t Height),     \
    (dstDevice, dstPitch, us, Width, Height))                                                     \
  X(CUresult, cuMemsetD2D32_v2, "cuMemsetD2D32", 3020, kNoLimit, kLegacy,                         \
    (CUdeviceptr dstDevice, size_t dstPitch, unsigned int ui, size_t Width, size_t Height),       \
    (dstDevice, dstPitch, ui, Width, Height))                                                     \
  X(CUresult, cuMemsetD2D32_v2_ptds, "cuMemsetD2D32", 7000, kNoLimit, kPerThread,                 \
    (CUdeviceptr dstDevice, size_t dstPitch, unsigned int ui, size_t Width, size_t Height),       \
    (dstDevice, dstPitch, ui, Width, Height))                                                     \
  X(CUresult, cuMemsetD2D8Async, "cuMemsetD2D8Async", 3020, kNoLimit, kLegacy,                    \
    (CUdeviceptr dstDevice, size_t dstPitch, unsigned char uc, size_t Width, size_t Height,       \
     CUstream hStream),                                                                           \
    (dstDevice, dstPitch, uc, Width, Height, hStream))                                            \
  X(CUresult, cuMemsetD2D8Async_ptsz, "cuMemsetD2D8Async", 7000, kNoLimit, kPerThread,            \
    (CUdeviceptr dstDevice, size_t dstPitch, unsigned char uc, size_t Width, size_t Height,       \
     CUstream hStream),                                                                           \
    (dstDevice, dstPitch, uc, Width, Height, hStream))                                            \
  X(CUresult, cuMemsetD2D16Async, "cuMemsetD2D16Async", 3020, kNoLimit, kLegacy,                  \
    (CUdeviceptr dstDevice, size_t dstPitch, unsigned short us, size_t Width, size_t Height,      \
     CUstream hStream),                                                                           \
    (dstDevice, dstPitch, us, Width, Height, hStream))                                            \
  X(CUresult, cuMemsetD2D16Async_ptsz, "cuMemsetD2D16Async", 7000, kNoLimit, kPerThread,          \
    (CUdeviceptr dstDevice, size_t dstPitch, unsigned short us, size_t Width, size_t Height,      \
     CUstream hStream),                                                                           \
    (dstDevice, dstPitch, us, Width, Height, hStream))                                            \
  X(CUresult, cuMemsetD2D32Async, "cuMemsetD2D32Async", 3020, kNoLimit, kLegacy,                  \
    (CUdeviceptr dstDevice, size_t dstPitch, unsigned int ui, size_t Width, size_t Height,        \
     CUstream hStream),                                                                           \
    (dstDevice, dstPitch, ui, Width, Height, hStream))                                            \
  X(CUresult, cuMemsetD2D32Async_ptsz, "cuMemsetD2D32Async", 7000, kNoLimit, kPerThread,          \
    (CUdeviceptr dstDevice, size_t dstPitch, unsigned int ui, size_t Width, size_t Height,        \
     CUstream hStream),                                                                           \
    (dstDevice, dstPitch, ui, Width, Height, hStream))

// Every substituted entry point: the table's slots, the exported symbols and the wrappers.
#define GPUSLEEP_ALL_DRIVER_HOOKS(X) GPUSLEEP_DRIVER_HOOKS(X) GPUSLEEP_GATED_DRIVER_HOOKS(X)

namespace gpusleep::driver_hooks {

enum Slot : std::size_t {
#define GPUSLEEP_SLOT(ret, abi, api, since, until, variant, params, args) kSlot_##abi,
  GPUSLEEP_ALL_DRIVER_HOOKS(GPUSLEEP_SLOT)
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
// The same for a lookup already matched to `slot` (-1: none).
void* for_slot(int slot, void* real);
void* for_request(const char* api, int version, std::uint64_t flags, void* real);
// For a pointer the CUDA runtime handed out (cudaGetDriverEntryPoint*), whose stream variant is
// not known: the wrapper of the slot whose function `real` is (learned, or found by its ABI name),
// or of the one slot of `api` at `version` when it takes no stream; `real` otherwise.
void* for_runtime_entry(const char* api, int version, void* real);

// The driver's function of `slot`; found with dlsym(RTLD_NEXT), or in the loaded libcuda.so.1,
// when no lookup has shown it yet (a program linked against libcuda calls the exported wrapper
// directly). Null if none.
void* real_or_next(std::size_t slot);

}  // namespace gpusleep::driver_hooks

// The bodies of GPUSLEEP_DRIVER_HOOKS, in runtime_calls.cpp (the gated ones need none): each
// receives its caller's address and the driver's function it stands for.
namespace gpusleep::hooks {
#define GPUSLEEP_BODY_DECL(ret, abi, api, since, until, variant, params, args) \
  ret abi GPUSLEEP_PREPEND(std::uintptr_t call_site, GPUSLEEP_PREPEND(ret(*real) params, params));
GPUSLEEP_DRIVER_HOOKS(GPUSLEEP_BODY_DECL)
#undef GPUSLEEP_BODY_DECL
}  // namespace gpusleep::hooks

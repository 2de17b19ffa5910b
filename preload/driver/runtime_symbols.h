// The one list of CUDA runtime symbols the library exports (X-macro; the driver's are in
// hooks/driver_symbols.h). From it come the exported functions (hooks/runtime_hooks.cpp), the
// table of real functions (real_runtime.h) and the symbol list that tests check the built library
// against.
#pragma once

// X(return type, name, parameter list, argument list)
#define GPUSLEEP_RUNTIME_HOOKS(X)                                                            \
  X(cudaError_t, cudaMalloc, (void** devPtr, size_t size), (devPtr, size))                   \
  X(cudaError_t, cudaFree, (void* devPtr), (devPtr))                                         \
  X(cudaError_t, cudaGetDriverEntryPoint,                                                    \
    (const char* symbol, void** funcPtr, unsigned long long flags,                           \
     cudaDriverEntryPointQueryResult* driverStatus),                                         \
    (symbol, funcPtr, flags, driverStatus))                                                  \
  X(cudaError_t, cudaGetDriverEntryPointByVersion,                                           \
    (const char* symbol, void** funcPtr, unsigned int cudaVersion, unsigned long long flags, \
     cudaDriverEntryPointQueryResult* driverStatus),                                         \
    (symbol, funcPtr, cudaVersion, flags, driverStatus))

// GPU work the program submits through the runtime (kernel and graph launches, copies, memsets,
// with their per-thread-default-stream variants): each passes the gate (gate.h) and goes on to
// the runtime's function unchanged.
#define GPUSLEEP_RUNTIME_GATED(X)                                                                  \
  X(cudaError_t, cudaLaunchKernel,                                                                 \
    (const void* func, dim3 gridDim, dim3 blockDim, void** args, size_t sharedMem,                 \
     cudaStream_t stream),                                                                         \
    (func, gridDim, blockDim, args, sharedMem, stream))                                            \
  X(cudaError_t, cudaLaunchKernel_ptsz,                                                            \
    (const void* func, dim3 gridDim, dim3 blockDim, void** args, size_t sharedMem,                 \
     cudaStream_t stream),                                                                         \
    (func, gridDim, blockDim, args, sharedMem, stream))                                            \
  X(cudaError_t, cudaLaunchKernelExC,                                                              \
    (const cudaLaunchConfig_t* config, const void* func, void** args), (config, func, args))       \
  X(cudaError_t, cudaLaunchKernelExC_ptsz,                                                         \
    (const cudaLaunchConfig_t* config, const void* func, void** args), (config, func, args))       \
  X(cudaError_t, cudaLaunchCooperativeKernel,                                                      \
    (const void* func, dim3 gridDim, dim3 blockDim, void** args, size_t sharedMem,                 \
     cudaStream_t stream),                                                                         \
    (func, gridDim, blockDim, args, sharedMem, stream))                                            \
  X(cudaError_t, cudaLaunchCooperativeKernel_ptsz,                                                 \
    (const void* func, dim3 gridDim, dim3 blockDim, void** args, size_t sharedMem,                 \
     cudaStream_t stream),                                                                         \
    (func, gridDim, blockDim, args, sharedMem, stream))                                            \
  X(cudaError_t, cudaGraphLaunch, (cudaGraphExec_t graphExec, cudaStream_t stream),                \
    (graphExec, stream))                                                                           \
  X(cudaError_t, cudaGraphLaunch_ptsz, (cudaGraphExec_t graphExec, cudaStream_t stream),           \
    (graphExec, stream))                                                                           \
  X(cudaError_t, cudaMemcpy, (void* dst, const void* src, size_t count, enum cudaMemcpyKind kind), \
    (dst, src, count, kind))                                                                       \
  X(cudaError_t, cudaMemcpy_ptds,                                                                  \
    (void* dst, const void* src, size_t count, enum cudaMemcpyKind kind), (dst, src, count, kind)) \
  X(cudaError_t, cudaMemcpyAsync,                                                                  \
    (void* dst, const void* src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream),     \
    (dst, src, count, kind, stream))                                                               \
  X(cudaError_t, cudaMemcpyAsync_ptsz,                                                             \
    (void* dst, const void* src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream),     \
    (dst, src, count, kind, stream))                                                               \
  X(cudaError_t, cudaMemcpy2D,                                                                     \
    (void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,        \
     enum cudaMemcpyKind kind),                                                                    \
    (dst, dpitch, src, spitch, width, height, kind))                                               \
  X(cudaError_t, cudaMemcpy2D_ptds,                                                                \
    (void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,        \
     enum cudaMemcpyKind kind),                                                                    \
    (dst, dpitch, src, spitch, width, height, kind))                                               \
  X(cudaError_t, cudaMemcpy2DAsync,                                                                \
    (void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,        \
     enum cudaMemcpyKind kind, cudaStream_t stream),                                               \
    (dst, dpitch, src, spitch, width, height, kind, stream))                                       \
  X(cudaError_t, cudaMemcpy2DAsync_ptsz,                                                           \
    (void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,        \
     enum cudaMemcpyKind kind, cudaStream_t stream),                                               \
    (dst, dpitch, src, spitch, width, height, kind, stream))                                       \
  X(cudaError_t, cudaMemcpy3D, (const struct cudaMemcpy3DParms* p), (p))                           \
  X(cudaError_t, cudaMemcpy3D_ptds, (const struct cudaMemcpy3DParms* p), (p))                      \
  X(cudaError_t, cudaMemcpy3DAsync, (const struct cudaMemcpy3DParms* p, cudaStream_t stream),      \
    (p, stream))                                                                                   \
  X(cudaError_t, cudaMemcpy3DAsync_ptsz, (const struct cudaMemcpy3DParms* p, cudaStream_t stream), \
    (p, stream))                                                                                   \
  X(cudaError_t, cudaMemcpyPeer,                                                                   \
    (void* dst, int dstDevice, const void* src, int srcDevice, size_t count),                      \
    (dst, dstDevice, src, srcDevice, count))                                                       \
  X(cudaError_t, cudaMemcpyPeerAsync,                                                              \
    (void* dst, int dstDevice, const void* src, int srcDevice, size_t count, cudaStream_t stream), \
    (dst, dstDevice, src, srcDevice, count, stream))                                               \
  X(cudaError_t, cudaMemcpyToSymbol,                                                               \
    (const void* symbol, const void* src, size_t count, size_t offset, enum cudaMemcpyKind kind),  \
    (symbol, src, count, offset, kind))                                                            \
  X(cudaError_t, cudaMemcpyToSymbol_ptds,                                                          \
    (const void* symbol, const void* src, size_t count, size_t offset, enum cudaMemcpyKind kind),  \
    (symbol, src, count, offset, kind))                                                            \
  X(cudaError_t, cudaMemcpyFromSymbol,                                                             \
    (void* dst, const void* symbol, size_t count, size_t offset, enum cudaMemcpyKind kind),        \
    (dst, symbol, count, offset, kind))                                                            \
  X(cudaError_t, cudaMemcpyFromSymbol_ptds,                                                        \
    (void* dst, const void* symbol, size_t count, size_t offset, enum cudaMemcpyKind kind),        \
    (dst, symbol, count, offset, kind))                                                            \
  X(cudaError_t, cudaMemcpyToSymbolAsync,                                                          \
    (const void* symbol, const void* src, size_t count, size_t offset, enum cudaMemcpyKind kind,   \
     cudaStream_t stream),                                                                         \
    (symbol, src, count, offset, kind, stream))                                                    \
  X(cudaError_t, cudaMemcpyToSymbolAsync_ptsz,                                                     \
    (const void* symbol, const void* src, size_t count, size_t offset, enum cudaMemcpyKind kind,   \
     cudaStream_t stream),                                                                         \
    (symbol, src, count, offset, kind, stream))                                                    \
  X(cudaError_t, cudaMemcpyFromSymbolAsync,                                                        \
    (void* dst, const void* symbol, size_t count, size_t offset, enum cudaMemcpyKind kind,         \
     cudaStream_t stream),                                                                         \
    (dst, symbol, count, offset, kind, stream))                                                    \
  X(cudaError_t, cudaMemcpyFromSymbolAsync_ptsz,                                                   \
    (void* dst, const void* symbol, size_t count, size_t offset, enum cudaMemcpyKind kind,         \
     cudaStream_t stream),                                                                         \
    (dst, symbol, count, offset, kind, stream))                                                    \
  X(cudaError_t, cudaMemset, (void* devPtr, int value, size_t count), (devPtr, value, count))      \
  X(cudaError_t, cudaMemset_ptds, (void* devPtr, int value, size_t count), (devPtr, value, count)) \
  X(cudaError_t, cudaMemsetAsync, (void* devPtr, int value, size_t count, cudaStream_t stream),    \
    (devPtr, value, count, stream))                                                                \
  X(cudaError_t, cudaMemsetAsync_ptsz,                                                             \
    (void* devPtr, int value, size_t count, cudaStream_t stream), (devPtr, value, count, stream))  \
  X(cudaError_t, cudaMemset2D,                                                                     \
    (void* devPtr, size_t pitch, int value, size_t width, size_t height),                          \
    (devPtr, pitch, value, width, height))                                                         \
  X(cudaError_t, cudaMemset2D_ptds,                                                                \
    (void* devPtr, size_t pitch, int value, size_t width, size_t height),                          \
    (devPtr, pitch, value, width, height))                                                         \
  X(cudaError_t, cudaMemset2DAsync,                                                                \
    (void* devPtr, size_t pitch, int value, size_t width, size_t height, cudaStream_t stream),     \
    (devPtr, pitch, value, width, height, stream))                                                 \
  X(cudaError_t, cudaMemset2DAsync_ptsz,                                                           \
    (void* devPtr, size_t pitch, int value, size_t width, size_t height, cudaStream_t stream),     \
    (devPtr, pitch, value, width, height, stream))                                                 \
  X(cudaError_t, cudaMemset3D,                                                                     \
    (struct cudaPitchedPtr pitchedDevPtr, int value, struct cudaExtent extent),                    \
    (pitchedDevPtr, value, extent))                                                                \
  X(cudaError_t, cudaMemset3D_ptds,                                                                \
    (struct cudaPitchedPtr pitchedDevPtr, int value, struct cudaExtent extent),                    \
    (pitchedDevPtr, value, extent))                                                                \
  X(cudaError_t, cudaMemset3DAsync,                                                                \
    (struct cudaPitchedPtr pitchedDevPtr, int value, struct cudaExtent extent,                     \
     cudaStream_t stream),                                                                         \
    (pitchedDevPtr, value, extent, stream))                                                        \
  X(cudaError_t, cudaMemset3DAsync_ptsz,                                                           \
    (struct cudaPitchedPtr pitchedDevPtr, int value, struct cudaExtent extent,                     \
     cudaStream_t stream),                                                                         \
    (pitchedDevPtr, value, extent, stream))

// Real runtime functions the library calls but does not export.
#define GPUSLEEP_RUNTIME_USED(X)                         \
  X(cudaError_t, cudaGetDevice, (int* device), (device)) \
  X(cudaError_t, cudaRuntimeGetVersion, (int* version), (version))

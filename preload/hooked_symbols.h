// The one list of CUDA runtime symbols the library exports (X-macro; the driver's are in
// driver_hooks.h). From it come the exported
// functions (hooks.cpp), the table of real functions (real_runtime.h) and the symbol list that
// tests check the built library against.
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

// Real runtime functions the library calls but does not export.
#define GPUSLEEP_RUNTIME_USED(X)                         \
  X(cudaError_t, cudaGetDevice, (int* device), (device)) \
  X(cudaError_t, cudaRuntimeGetVersion, (int* version), (version))

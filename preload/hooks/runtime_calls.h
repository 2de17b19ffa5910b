// What the hooks do: decide between a managed region and the real allocator, and turn the
// engine's outcome into a CUDA error code. Called only from hooks.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace gpusleep::hooks {

cudaError_t cudaMalloc(std::uintptr_t call_site, void** devPtr, size_t size);
cudaError_t cudaFree(std::uintptr_t call_site, void* devPtr);
cudaError_t cudaGetDriverEntryPoint(std::uintptr_t call_site, const char* symbol, void** funcPtr,
                                    unsigned long long flags,
                                    cudaDriverEntryPointQueryResult* driverStatus);
cudaError_t cudaGetDriverEntryPointByVersion(std::uintptr_t call_site, const char* symbol,
                                             void** funcPtr, unsigned int cudaVersion,
                                             unsigned long long flags,
                                             cudaDriverEntryPointQueryResult* driverStatus);

}  // namespace gpusleep::hooks

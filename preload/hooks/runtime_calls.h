// The bodies of the runtime hooks that do more than pass the gate (GPUSLEEP_RUNTIME_HOOKS in
// driver/runtime_symbols.h), in runtime_calls.cpp. Called only from runtime_hooks.cpp.
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

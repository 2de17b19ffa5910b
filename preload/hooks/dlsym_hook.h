// dlsym interposition. Programs that load the driver themselves (the static CUDA runtime, JAX,
// CuPy, NCCL) find cuGetProcAddress and other driver functions with dlsym on libcuda's handle;
// the library's dlsym hands back its wrappers for the entry points of driver_hooks.h, and leaves
// every other lookup, and every lookup made by the library itself, exactly as glibc answers it.
#pragma once

namespace gpusleep {

// glibc's dlsym. The library's own lookups go through it (or through dlsym, which sees that they
// come from the library).
void* real_dlsym(void* handle, const char* name);

}  // namespace gpusleep

// The real functions behind the hooks: the CUDA runtime's, resolved once with dlsym(RTLD_NEXT), and
// glibc's dlsym.
#pragma once

#include <cuda_runtime_api.h>

#include "driver/runtime_symbols.h"

namespace gpusleep {

struct RealRuntime {
#define GPUSLEEP_REAL_FIELD(ret, name, params, args) ret(*name) params = nullptr;
  GPUSLEEP_RUNTIME_HOOKS(GPUSLEEP_REAL_FIELD)
  GPUSLEEP_RUNTIME_GATED(GPUSLEEP_REAL_FIELD)
  GPUSLEEP_RUNTIME_USED(GPUSLEEP_REAL_FIELD)
#undef GPUSLEEP_REAL_FIELD
};

// The next definitions after this library in lookup order. A missing one stays null (and is
// logged once): a process can call a hook without having loaded the runtime that defines it.
const RealRuntime& real_runtime();

// glibc's dlsym (the exported dlsym is the library's own, hooks/dlsym_hook.cpp). The library's
// own lookups go through it. Null when glibc has none of the versions known.
using DlsymFn = void* (*)(void*, const char*);
DlsymFn real_dlsym_function();
void* real_dlsym(void* handle, const char* name);

}  // namespace gpusleep

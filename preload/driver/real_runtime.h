// The real CUDA runtime functions behind the hooks, resolved once with dlsym(RTLD_NEXT).
#pragma once

#include <cuda_runtime_api.h>

#include "hooks/runtime_symbols.h"

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

}  // namespace gpusleep

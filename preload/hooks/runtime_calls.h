// The bodies of GPUSLEEP_RUNTIME_HOOKS (driver/runtime_symbols.h), in runtime_calls.cpp, declared
// from the list as driver_symbols.h declares the driver's: each receives its caller's address.
// Called only from runtime_hooks.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "driver/runtime_symbols.h"
#include "hooks/macro_util.h"

namespace gpusleep::hooks {
#define GPUSLEEP_BODY_DECL(ret, name, params, args) \
  ret name GPUSLEEP_PREPEND(std::uintptr_t call_site, params);
GPUSLEEP_RUNTIME_HOOKS(GPUSLEEP_BODY_DECL)
#undef GPUSLEEP_BODY_DECL
}  // namespace gpusleep::hooks

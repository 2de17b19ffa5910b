// The exported CUDA runtime symbols, generated from hooked_symbols.h: each records its caller and
// forwards to its body in interpose.cpp. Nothing else lives here.
#include <cstdint>

#include "hooked_symbols.h"
#include "interpose.h"
#include "macro_util.h"

#define GPUSLEEP_DEFINE_HOOK(ret, name, params, args)                         \
  extern "C" GPUSLEEP_EXPORT ret name params {                                \
    return gpusleep::hooks::name GPUSLEEP_PREPEND(                            \
        reinterpret_cast<std::uintptr_t>(__builtin_return_address(0)), args); \
  }

GPUSLEEP_RUNTIME_HOOKS(GPUSLEEP_DEFINE_HOOK)

// The hooked symbols, for tools and tests that check the built library exports each of them.
extern "C" GPUSLEEP_EXPORT const char* const* gpusleep_hooked_symbols() {
#define GPUSLEEP_NAME(ret, name, params, args) #name,
  static const char* const kNames[] = {GPUSLEEP_RUNTIME_HOOKS(GPUSLEEP_NAME) nullptr};
#undef GPUSLEEP_NAME
  return kNames;
}

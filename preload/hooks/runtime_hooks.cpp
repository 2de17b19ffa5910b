// The exported CUDA runtime symbols, generated from driver/runtime_symbols.h: each records its
// caller and forwards to its body in runtime_calls.cpp, or passes the gate. Nothing else lives
// here.
#include <cstdint>

#include "core/gate.h"
#include "driver/real_runtime.h"
#include "driver/runtime_symbols.h"
#include "hooks/macro_util.h"
#include "hooks/runtime_calls.h"

#define GPUSLEEP_DEFINE_HOOK(ret, name, params, args)                         \
  extern "C" GPUSLEEP_EXPORT ret name params {                                \
    return gpusleep::hooks::name GPUSLEEP_PREPEND(                            \
        reinterpret_cast<std::uintptr_t>(__builtin_return_address(0)), args); \
  }

GPUSLEEP_RUNTIME_HOOKS(GPUSLEEP_DEFINE_HOOK)

// Gated calls: pass the gate, then the runtime's function. A runtime the process has not loaded
// reads as one that failed to start.
#define GPUSLEEP_DEFINE_GATED(ret, name, params, args)         \
  extern "C" GPUSLEEP_EXPORT ret name params {                 \
    auto real = gpusleep::real_runtime().name;                 \
    if (real == nullptr) return cudaErrorInitializationError;  \
    gpusleep::GatePass pass(gpusleep::Gate::process(), #name); \
    return real args;                                          \
  }
GPUSLEEP_RUNTIME_GATED(GPUSLEEP_DEFINE_GATED)
#undef GPUSLEEP_DEFINE_GATED

// The hooked symbols, for tools and tests that check the built library exports each of them.
extern "C" GPUSLEEP_EXPORT const char* const* gpusleep_hooked_symbols() {
#define GPUSLEEP_NAME(ret, name, params, args) #name,
  static const char* const kNames[] = {GPUSLEEP_RUNTIME_HOOKS(GPUSLEEP_NAME)
                                           GPUSLEEP_RUNTIME_GATED(GPUSLEEP_NAME) nullptr};
#undef GPUSLEEP_NAME
  return kNames;
}

// The exported driver symbols and the substitution table, generated from driver_symbols.h. Each
// exported function finds the driver's function it stands for and runs its body in
// runtime_calls.cpp, or passes the gate.
#include "hooks/driver_symbols.h"

#include <dlfcn.h>

#include <cstring>

#include "base/log.h"
#include "core/gate.h"
#include "driver/real_runtime.h"

namespace gpusleep::driver_hooks {
namespace {

const EntryPoint kEntries[] = {
#define GPUSLEEP_ENTRY(ret, abi, api, since, until, variant, params, args) \
  {#abi, api, since, until, StreamVariant::variant},
    GPUSLEEP_ALL_DRIVER_HOOKS(GPUSLEEP_ENTRY)
#undef GPUSLEEP_ENTRY
};
static_assert(sizeof(kEntries) / sizeof(kEntries[0]) == kSlotCount);

}  // namespace
}  // namespace gpusleep::driver_hooks

// The exported functions. A missing driver function (none loaded) reads as an uninitialized
// driver, which is what the caller would have got from a driver that failed to start.
#define GPUSLEEP_FIND_REAL(ret, abi, params)                                      \
  auto real = reinterpret_cast<ret(*) params>(                                    \
      gpusleep::driver_hooks::real_or_next(gpusleep::driver_hooks::kSlot_##abi)); \
  if (real == nullptr) return CUDA_ERROR_NOT_INITIALIZED

#define GPUSLEEP_DEFINE_DRIVER_HOOK(ret, abi, api, since, until, variant, params, args) \
  extern "C" GPUSLEEP_EXPORT ret abi params {                                           \
    GPUSLEEP_FIND_REAL(ret, abi, params);                                               \
    return gpusleep::hooks::abi GPUSLEEP_PREPEND(                                       \
        reinterpret_cast<std::uintptr_t>(__builtin_return_address(0)),                  \
        GPUSLEEP_PREPEND(real, args));                                                  \
  }
GPUSLEEP_DRIVER_HOOKS(GPUSLEEP_DEFINE_DRIVER_HOOK)
#undef GPUSLEEP_DEFINE_DRIVER_HOOK

// The gated ones: pass the gate, then the driver's function.
#define GPUSLEEP_DEFINE_GATED_HOOK(ret, abi, api, since, until, variant, params, args) \
  extern "C" GPUSLEEP_EXPORT ret abi params {                                          \
    GPUSLEEP_FIND_REAL(ret, abi, params);                                              \
    gpusleep::GatePass pass(gpusleep::Gate::process(), #abi);                          \
    return real args;                                                                  \
  }
GPUSLEEP_GATED_DRIVER_HOOKS(GPUSLEEP_DEFINE_GATED_HOOK)
#undef GPUSLEEP_DEFINE_GATED_HOOK
#undef GPUSLEEP_FIND_REAL

namespace gpusleep::driver_hooks {
namespace {

void* const kWrappers[] = {
#define GPUSLEEP_WRAPPER(ret, abi, api, since, until, variant, params, args) \
  reinterpret_cast<void*>(&::abi),
    GPUSLEEP_ALL_DRIVER_HOOKS(GPUSLEEP_WRAPPER)
#undef GPUSLEEP_WRAPPER
};

void* substitute(int slot, void* real) {
  if (slot < 0) return real;
  auto s = static_cast<std::size_t>(slot);
  if (table().learn(s, real)) return kWrappers[s];
  GS_DEBUG("%s resolved to a second function (%p); handing it back unwrapped", table().entry(s).abi,
           real);
  return real;
}

}  // namespace

EntryPointTable& table() {
  static EntryPointTable* t = new EntryPointTable(kEntries, kSlotCount);  // lives with the process
  return *t;
}

void* wrapper(std::size_t slot) {
  return slot < kSlotCount ? kWrappers[slot] : nullptr;
}

bool is_wrapper(const void* fn) {
  for (void* w : kWrappers) {
    if (w == fn) return true;
  }
  return false;
}

void* for_symbol(const char* abi_name, void* real) {
  return for_slot(table().by_abi(abi_name), real);
}

void* for_slot(int slot, void* real) {
  if (real == nullptr || is_wrapper(real)) return real;
  return substitute(slot, real);
}

void* for_request(const char* api, int version, std::uint64_t flags, void* real) {
  if (real == nullptr || is_wrapper(real)) return real;
  return substitute(table().by_request(api, version, flags), real);
}

void* for_runtime_entry(const char* api, int version, void* real) {
  if (real == nullptr || is_wrapper(real) || api == nullptr) return real;
  int candidates = 0;
  int only = -1;
  for (std::size_t i = 0; i < kSlotCount; ++i) {
    const EntryPoint& e = table().entry(i);
    if (std::strcmp(e.api, api) != 0 || version < e.since || version > e.until) continue;
    // A slot that has not seen its function yet looks it up by its ABI name.
    if (real_or_next(i) == real) return kWrappers[i];
    ++candidates;
    only = static_cast<int>(i);
  }
  if (candidates == 1 &&
      table().entry(static_cast<std::size_t>(only)).variant == StreamVariant::kAny) {
    return substitute(only, real);
  }
  return real;
}

void* real_or_next(std::size_t slot) {
  void* fn = table().real(slot);
  if (fn != nullptr) return fn;
  fn = real_dlsym(RTLD_NEXT, table().entry(slot).abi);
  if (fn == nullptr) {
    // The driver may be loaded privately (RTLD_LOCAL, as the CUDA runtime does): ask it.
    void* cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (cuda != nullptr) {
      fn = real_dlsym(cuda, table().entry(slot).abi);
      dlclose(cuda);  // drops only the reference NOLOAD took
    }
  }
  if (fn == nullptr || is_wrapper(fn)) return nullptr;
  table().learn(slot, fn);
  return table().real(slot);
}

}  // namespace gpusleep::driver_hooks

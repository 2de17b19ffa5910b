// Real-symbol resolution, in one place.
#include "driver/real_runtime.h"

#include <dlfcn.h>

#include "base/log.h"

namespace gpusleep {

const RealRuntime& real_runtime() {
  static const RealRuntime table = [] {
    RealRuntime t;
#define GPUSLEEP_RESOLVE(ret, name, params, args)                       \
  t.name = reinterpret_cast<decltype(t.name)>(dlsym(RTLD_NEXT, #name)); \
  if (t.name == nullptr) GS_DEBUG("the CUDA runtime's " #name " was not found");
    GPUSLEEP_RUNTIME_HOOKS(GPUSLEEP_RESOLVE)
    GPUSLEEP_RUNTIME_GATED(GPUSLEEP_RESOLVE)
    GPUSLEEP_RUNTIME_USED(GPUSLEEP_RESOLVE)
#undef GPUSLEEP_RESOLVE
    return t;
  }();
  return table;
}

DlsymFn real_dlsym_function() {
  // glibc 2.34 moved dlsym into libc under a new version; older ones have only the first.
  auto fn = reinterpret_cast<DlsymFn>(dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34"));
  if (fn == nullptr) fn = reinterpret_cast<DlsymFn>(dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5"));
  return fn;
}

void* real_dlsym(void* handle, const char* name) {
  static const DlsymFn fn = real_dlsym_function();
  return fn != nullptr ? fn(handle, name) : nullptr;
}

}  // namespace gpusleep

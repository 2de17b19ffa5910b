// Hook bodies. A thread-local guard sends any call made while the library itself is inside a
// hook straight to the real function, so the library never manages its own allocations.
#include "interpose.h"

#include "engine.h"
#include "log.h"
#include "real_runtime.h"
#include "runtime.h"

namespace gpusleep::hooks {
namespace {

thread_local bool t_inside = false;

class Reentry {
 public:
  Reentry() : first_(!t_inside) { t_inside = true; }
  ~Reentry() {
    if (first_) t_inside = false;
  }
  bool first() const { return first_; }

 private:
  bool first_;
};

cudaError_t real_malloc(Engine* engine, void** devPtr, size_t size) {
  const RealRuntime& real = real_runtime();
  if (real.cudaMalloc == nullptr) return cudaErrorInitializationError;
  cudaError_t rc = real.cudaMalloc(devPtr, size);
  if (rc == cudaSuccess && engine != nullptr && devPtr != nullptr && *devPtr != nullptr) {
    engine->note_passthrough(reinterpret_cast<DevicePtr>(*devPtr), size);
  }
  return rc;
}

}  // namespace

cudaError_t cudaMalloc(std::uintptr_t call_site, void** devPtr, size_t size) {
  Reentry guard;
  Runtime* rt = guard.first() ? Runtime::get() : nullptr;
  if (rt == nullptr || devPtr == nullptr) return real_malloc(nullptr, devPtr, size);
  int device = 0;
  const RealRuntime& real = real_runtime();
  if (real.cudaGetDevice == nullptr || real.cudaGetDevice(&device) != cudaSuccess) {
    return real_malloc(&rt->engine(), devPtr, size);
  }
  DevicePtr va = 0;
  switch (rt->engine().allocate(size, device, call_site, &va)) {
    case AllocOutcome::kManaged:
      *devPtr = reinterpret_cast<void*>(va);
      return cudaSuccess;
    case AllocOutcome::kOutOfMemory:
      GS_INFO("out of device memory for %zu bytes on device %d", size, device);
      *devPtr = nullptr;
      return cudaErrorMemoryAllocation;
    case AllocOutcome::kPassthrough:
      break;
  }
  return real_malloc(&rt->engine(), devPtr, size);
}

cudaError_t cudaFree(std::uintptr_t /*call_site*/, void* devPtr) {
  Reentry guard;
  const RealRuntime& real = real_runtime();
  Runtime* rt = guard.first() && devPtr != nullptr ? Runtime::get() : nullptr;
  if (rt != nullptr) {
    auto ptr = reinterpret_cast<DevicePtr>(devPtr);
    if (rt->engine().free(ptr) == FreeOutcome::kFreed) return cudaSuccess;
    rt->engine().forget_passthrough(ptr);
  }
  return real.cudaFree != nullptr ? real.cudaFree(devPtr) : cudaErrorInitializationError;
}

}  // namespace gpusleep::hooks

// The emulated driver: initialization, devices, contexts, peer access and memory info.
#include <cstdio>
#include <mutex>

#include "fake_driver.h"

using namespace fakecuda;

// ---- initialization, devices, contexts ----

CUresult CUDAAPI cuInit(unsigned int flags) {
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard<std::mutex> lock(st().mu);
  if (st().initialized) return CUDA_SUCCESS;
  st().shared = open_shared();
  if (st().shared == nullptr) return CUDA_ERROR_NO_DEVICE;
  for (int i = 0; i < kMaxDevices; ++i)
    st().contexts[i].device = i;
  st().vmm = env_u64("FAKECUDA_NO_VMM", 0) == 0;
  st().copy_delay_us = static_cast<unsigned>(env_u64("FAKECUDA_COPY_DELAY_US", 0));
  st().initialized = true;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDriverGetVersion(int* version) {
  if (version == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *version = 13000;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetCount(int* count) {
  FAKE_ENTER("cuDeviceGetCount");
  if (count == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *count = static_cast<int>(st().shared->devices);
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGet(CUdevice* device, int ordinal) {
  FAKE_ENTER("cuDeviceGet");
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(ordinal)) return CUDA_ERROR_INVALID_DEVICE;
  *device = ordinal;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetName(char* name, int len, CUdevice dev) {
  FAKE_ENTER("cuDeviceGetName");
  if (name == nullptr || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
  std::snprintf(name, static_cast<std::size_t>(len), "Emulated GPU %d", dev);
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetAttribute(int* value, CUdevice_attribute attrib, CUdevice dev) {
  FAKE_ENTER("cuDeviceGetAttribute");
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
  switch (attrib) {
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED:
      *value = st().vmm ? 1 : 0;
      break;
    case CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED:
      *value = st().vmm ? 1 : 0;
      break;
    default:
      *value = 0;
  }
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDevicePrimaryCtxRetain(CUcontext* pctx, CUdevice dev) {
  FAKE_ENTER("cuDevicePrimaryCtxRetain");
  if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
  *pctx = reinterpret_cast<CUcontext>(&st().contexts[dev]);
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxGetCurrent(CUcontext* pctx) {
  FAKE_ENTER("cuCtxGetCurrent");
  if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *pctx = reinterpret_cast<CUcontext>(t_current);
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxSetCurrent(CUcontext ctx) {
  FAKE_ENTER("cuCtxSetCurrent");
  auto* c = reinterpret_cast<Ctx*>(ctx);
  if (c != nullptr && (c < &st().contexts[0] || c >= &st().contexts[kMaxDevices])) {
    return CUDA_ERROR_INVALID_CONTEXT;
  }
  t_current = c;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxGetDevice(CUdevice* device) {
  FAKE_ENTER("cuCtxGetDevice");
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  *device = t_current->device;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxSynchronize(void) {
  FAKE_ENTER_WORK("cuCtxSynchronize");
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (CUresult rc = capture_check(true)) return rc;
  ++st().stats.syncs;
  return CUDA_SUCCESS;
}

Ctx* ctx_of(CUcontext ctx) {
  auto* c = reinterpret_cast<Ctx*>(ctx);
  if (c < &st().contexts[0] || c >= &st().contexts[kMaxDevices]) return nullptr;
  return valid_device(c->device) ? c : nullptr;
}

CUresult CUDAAPI cuCtxPushCurrent(CUcontext ctx) {
  FAKE_ENTER("cuCtxPushCurrent_v2");
  Ctx* c = ctx_of(ctx);
  if (c == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (t_depth == 16) return CUDA_ERROR_OUT_OF_MEMORY;
  t_stack[t_depth++] = t_current;
  t_current = c;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxPopCurrent(CUcontext* pctx) {
  FAKE_ENTER("cuCtxPopCurrent_v2");
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (pctx != nullptr) *pctx = reinterpret_cast<CUcontext>(t_current);
  t_current = t_depth > 0 ? t_stack[--t_depth] : nullptr;
  return CUDA_SUCCESS;
}

// Peer access, as the real driver keeps it: the current context's device may then reach plain
// allocations of the peer's device (virtual-memory mappings need cuMemSetAccess as well).
CUresult CUDAAPI cuCtxEnablePeerAccess(CUcontext peer, unsigned int flags) {
  FAKE_ENTER("cuCtxEnablePeerAccess");
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  Ctx* c = ctx_of(peer);
  if (c == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (c->device == t_current->device) return CUDA_ERROR_INVALID_DEVICE;
  bool& on = st().peer[t_current->device][c->device];
  if (on) return CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED;
  on = true;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxDisablePeerAccess(CUcontext peer) {
  FAKE_ENTER("cuCtxDisablePeerAccess");
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  Ctx* c = ctx_of(peer);
  if (c == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  bool& on = st().peer[t_current->device][c->device];
  if (!on) return CUDA_ERROR_PEER_ACCESS_NOT_ENABLED;
  on = false;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  FAKE_ENTER("cuMemGetInfo_v2");
  if (free_bytes == nullptr || total_bytes == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  int d = t_current->device;
  *total_bytes = st().shared->capacity[d];
  *free_bytes = st().shared->capacity[d] - st().shared->used[d].load();
  return CUDA_SUCCESS;
}

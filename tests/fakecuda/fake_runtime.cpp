// An emulated CUDA runtime (libcudart.so.13) over the emulated driver: the subset that the test
// programs and gpusleep's hooks call. Like the real runtime it keeps a current device per thread,
// makes that device's primary context current on first use, and reaches the driver only through
// entry points: it loads libcuda.so.1, looks up cuGetProcAddress_v2 with dlsym and asks it for
// every other function.
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cstring>

#undef cuGetProcAddress
namespace {

constexpr int kDriverVersionAsked = 13000;

// The driver functions this runtime calls, as it obtained them.
struct DriverTable {
  CUresult init = CUDA_ERROR_NOT_INITIALIZED;
  decltype(&::cuGetProcAddress_v2) getProcAddress = nullptr;
  decltype(&::cuInit) cuInit = nullptr;
  decltype(&::cuDeviceGetCount) cuDeviceGetCount = nullptr;
  decltype(&::cuDevicePrimaryCtxRetain) cuDevicePrimaryCtxRetain = nullptr;
  decltype(&::cuCtxGetCurrent) cuCtxGetCurrent = nullptr;
  decltype(&::cuCtxSetCurrent) cuCtxSetCurrent = nullptr;
  decltype(&::cuCtxGetDevice) cuCtxGetDevice = nullptr;
  decltype(&::cuCtxSynchronize) cuCtxSynchronize = nullptr;
  decltype(&::cuCtxEnablePeerAccess) cuCtxEnablePeerAccess = nullptr;
  decltype(&::cuCtxDisablePeerAccess) cuCtxDisablePeerAccess = nullptr;
  decltype(&::cuMemAlloc_v2) cuMemAlloc = nullptr;
  decltype(&::cuMemAllocPitch_v2) cuMemAllocPitch = nullptr;
  decltype(&::cuMemFree_v2) cuMemFree = nullptr;
  decltype(&::cuMemAllocAsync) cuMemAllocAsync = nullptr;
  decltype(&::cuMemFreeAsync) cuMemFreeAsync = nullptr;
  decltype(&::cuIpcGetMemHandle) cuIpcGetMemHandle = nullptr;
  decltype(&::cuMemcpyHtoD_v2) cuMemcpyHtoD = nullptr;
  decltype(&::cuMemcpyDtoH_v2) cuMemcpyDtoH = nullptr;
  decltype(&::cuMemsetD8_v2) cuMemsetD8 = nullptr;
  decltype(&::cuMemGetInfo_v2) cuMemGetInfo = nullptr;
  decltype(&::cuLaunchKernel) cuLaunchKernel = nullptr;
  decltype(&::cuLaunchKernel) cuLaunchKernel_ptsz = nullptr;
  decltype(&::cuGraphLaunch) cuGraphLaunch = nullptr;
  decltype(&::cuGraphLaunch) cuGraphLaunch_ptsz = nullptr;
};

template <typename F>
bool entry(const DriverTable& t, const char* name, F* out,
           cuuint64_t flags = CU_GET_PROC_ADDRESS_DEFAULT) {
  void* p = nullptr;
  CUdriverProcAddressQueryResult status;
  if (t.getProcAddress(name, &p, kDriverVersionAsked, flags, &status) != CUDA_SUCCESS) {
    return false;
  }
  *out = reinterpret_cast<F>(p);
  return p != nullptr;
}

const DriverTable& drv() {
  static const DriverTable table = [] {
    DriverTable t;
    void* lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (lib == nullptr) {
      t.init = CUDA_ERROR_NO_DEVICE;
      return t;
    }
    t.getProcAddress =
        reinterpret_cast<decltype(t.getProcAddress)>(dlsym(lib, "cuGetProcAddress_v2"));
    if (t.getProcAddress == nullptr) {
      t.init = CUDA_ERROR_NO_DEVICE;
      return t;
    }
    bool ok =
        entry(t, "cuInit", &t.cuInit) && entry(t, "cuDeviceGetCount", &t.cuDeviceGetCount) &&
        entry(t, "cuDevicePrimaryCtxRetain", &t.cuDevicePrimaryCtxRetain) &&
        entry(t, "cuCtxGetCurrent", &t.cuCtxGetCurrent) &&
        entry(t, "cuCtxSetCurrent", &t.cuCtxSetCurrent) &&
        entry(t, "cuCtxGetDevice", &t.cuCtxGetDevice) &&
        entry(t, "cuCtxSynchronize", &t.cuCtxSynchronize) &&
        entry(t, "cuCtxEnablePeerAccess", &t.cuCtxEnablePeerAccess) &&
        entry(t, "cuCtxDisablePeerAccess", &t.cuCtxDisablePeerAccess) &&
        entry(t, "cuMemAlloc", &t.cuMemAlloc) && entry(t, "cuMemAllocPitch", &t.cuMemAllocPitch) &&
        entry(t, "cuMemFree", &t.cuMemFree) && entry(t, "cuMemAllocAsync", &t.cuMemAllocAsync) &&
        entry(t, "cuMemFreeAsync", &t.cuMemFreeAsync) &&
        entry(t, "cuIpcGetMemHandle", &t.cuIpcGetMemHandle) &&
        entry(t, "cuMemcpyHtoD", &t.cuMemcpyHtoD) && entry(t, "cuMemcpyDtoH", &t.cuMemcpyDtoH) &&
        entry(t, "cuMemsetD8", &t.cuMemsetD8) && entry(t, "cuMemGetInfo", &t.cuMemGetInfo) &&
        entry(t, "cuLaunchKernel", &t.cuLaunchKernel) &&
        entry(t, "cuLaunchKernel", &t.cuLaunchKernel_ptsz,
              CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) &&
        entry(t, "cuGraphLaunch", &t.cuGraphLaunch) &&
        entry(t, "cuGraphLaunch", &t.cuGraphLaunch_ptsz,
              CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
    t.init = ok ? t.cuInit(0) : CUDA_ERROR_NOT_INITIALIZED;
    return t;
  }();
  return table;
}

thread_local int t_device = 0;
thread_local cudaError_t t_last_error = cudaSuccess;

cudaError_t to_runtime(CUresult rc) {
  switch (rc) {
    case CUDA_SUCCESS:
      return cudaSuccess;
    case CUDA_ERROR_OUT_OF_MEMORY:
      return cudaErrorMemoryAllocation;
    case CUDA_ERROR_INVALID_DEVICE:
      return cudaErrorInvalidDevice;
    case CUDA_ERROR_NO_DEVICE:
      return cudaErrorNoDevice;
    case CUDA_ERROR_INVALID_VALUE:
      return cudaErrorInvalidValue;
    case CUDA_ERROR_NOT_SUPPORTED:
      return cudaErrorNotSupported;
    case CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED:
      return cudaErrorPeerAccessAlreadyEnabled;
    case CUDA_ERROR_PEER_ACCESS_NOT_ENABLED:
      return cudaErrorPeerAccessNotEnabled;
    case CUDA_ERROR_NOT_FOUND:
      return cudaErrorSymbolNotFound;
    case CUDA_ERROR_ILLEGAL_ADDRESS:
      return cudaErrorIllegalAddress;
    default:
      return cudaErrorUnknown;
  }
}

cudaError_t record(cudaError_t e) {
  if (e != cudaSuccess) t_last_error = e;
  return e;
}

// Initializes the driver and makes the current device's primary context current.
cudaError_t ensure_context() {
  const DriverTable& d = drv();
  if (d.init != CUDA_SUCCESS) return to_runtime(d.init);
  CUcontext current = nullptr;
  d.cuCtxGetCurrent(&current);
  if (current != nullptr) {
    CUdevice dev = -1;
    if (d.cuCtxGetDevice(&dev) == CUDA_SUCCESS && dev == t_device) return cudaSuccess;
  }
  CUcontext primary = nullptr;
  if (CUresult rc = d.cuDevicePrimaryCtxRetain(&primary, t_device)) return to_runtime(rc);
  return to_runtime(d.cuCtxSetCurrent(primary));
}

}  // namespace

cudaError_t CUDARTAPI cudaGetDeviceCount(int* count) {
  const DriverTable& d = drv();
  if (d.init != CUDA_SUCCESS) return record(to_runtime(d.init));
  return record(to_runtime(d.cuDeviceGetCount(count)));
}

cudaError_t CUDARTAPI cudaGetDevice(int* device) {
  if (device == nullptr) return record(cudaErrorInvalidValue);
  *device = t_device;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaSetDevice(int device) {
  int count = 0;
  if (cudaError_t e = cudaGetDeviceCount(&count)) return e;
  if (device < 0 || device >= count) return record(cudaErrorInvalidDevice);
  t_device = device;
  return record(ensure_context());
}

cudaError_t CUDARTAPI cudaMalloc(void** ptr, size_t size) {
  if (ptr == nullptr) return record(cudaErrorInvalidValue);
  if (size == 0) {
    *ptr = nullptr;
    return cudaSuccess;
  }
  if (cudaError_t e = ensure_context()) return record(e);
  CUdeviceptr p = 0;
  CUresult rc = drv().cuMemAlloc(&p, size);
  *ptr = rc == CUDA_SUCCESS ? reinterpret_cast<void*>(p) : nullptr;
  return record(to_runtime(rc));
}

cudaError_t CUDARTAPI cudaFree(void* ptr) {
  if (cudaError_t e = ensure_context()) return record(e);
  if (ptr == nullptr) return cudaSuccess;
  drv().cuCtxSynchronize();
  return record(to_runtime(drv().cuMemFree(reinterpret_cast<CUdeviceptr>(ptr))));
}

cudaError_t CUDARTAPI cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  if (cudaError_t e = ensure_context()) return record(e);
  switch (kind) {
    case cudaMemcpyHostToDevice:
      return record(to_runtime(drv().cuMemcpyHtoD(reinterpret_cast<CUdeviceptr>(dst), src, count)));
    case cudaMemcpyDeviceToHost:
      return record(to_runtime(drv().cuMemcpyDtoH(dst, reinterpret_cast<CUdeviceptr>(src), count)));
    default:
      return record(cudaErrorInvalidMemcpyDirection);
  }
}

cudaError_t CUDARTAPI cudaMemset(void* dst, int value, size_t count) {
  if (cudaError_t e = ensure_context()) return record(e);
  return record(to_runtime(drv().cuMemsetD8(reinterpret_cast<CUdeviceptr>(dst),
                                            static_cast<unsigned char>(value), count)));
}

// Kernels are the emulated driver's (fakecuda.h): `func` is the host function to run.
cudaError_t CUDARTAPI cudaLaunchKernel(const void* func, dim3 grid, dim3 block, void** args,
                                       size_t shared, cudaStream_t stream) {
  if (cudaError_t e = ensure_context()) return record(e);
  return record(to_runtime(
      drv().cuLaunchKernel(reinterpret_cast<CUfunction>(const_cast<void*>(func)), grid.x, grid.y,
                           grid.z, block.x, block.y, block.z, static_cast<unsigned>(shared),
                           reinterpret_cast<CUstream>(stream), args, nullptr)));
}

extern "C" cudaError_t CUDARTAPI cudaLaunchKernel_ptsz(const void* func, dim3 grid, dim3 block,
                                                       void** args, size_t shared,
                                                       cudaStream_t stream) {
  if (cudaError_t e = ensure_context()) return record(e);
  return record(to_runtime(drv().cuLaunchKernel_ptsz(
      reinterpret_cast<CUfunction>(const_cast<void*>(func)), grid.x, grid.y, grid.z, block.x,
      block.y, block.z, static_cast<unsigned>(shared), reinterpret_cast<CUstream>(stream), args,
      nullptr)));
}

cudaError_t CUDARTAPI cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (cudaError_t e = ensure_context()) return record(e);
  return record(to_runtime(drv().cuGraphLaunch(reinterpret_cast<CUgraphExec>(exec),
                                               reinterpret_cast<CUstream>(stream))));
}

extern "C" cudaError_t CUDARTAPI cudaGraphLaunch_ptsz(cudaGraphExec_t exec, cudaStream_t stream) {
  if (cudaError_t e = ensure_context()) return record(e);
  return record(to_runtime(drv().cuGraphLaunch_ptsz(reinterpret_cast<CUgraphExec>(exec),
                                                    reinterpret_cast<CUstream>(stream))));
}

cudaError_t CUDARTAPI cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (cudaError_t e = ensure_context()) return record(e);
  return record(to_runtime(drv().cuMemGetInfo(free_bytes, total_bytes)));
}

cudaError_t CUDARTAPI cudaDeviceSynchronize(void) {
  if (cudaError_t e = ensure_context()) return record(e);
  return record(to_runtime(drv().cuCtxSynchronize()));
}

cudaError_t CUDARTAPI cudaMallocPitch(void** ptr, size_t* pitch, size_t width, size_t height) {
  if (ptr == nullptr) return record(cudaErrorInvalidValue);
  if (cudaError_t e = ensure_context()) return record(e);
  CUdeviceptr p = 0;
  CUresult rc = drv().cuMemAllocPitch(&p, pitch, width, height, 4);
  *ptr = rc == CUDA_SUCCESS ? reinterpret_cast<void*>(p) : nullptr;
  return record(to_runtime(rc));
}

cudaError_t CUDARTAPI cudaMallocAsync(void** ptr, size_t size, cudaStream_t stream) {
  if (ptr == nullptr) return record(cudaErrorInvalidValue);
  if (cudaError_t e = ensure_context()) return record(e);
  CUdeviceptr p = 0;
  CUresult rc = drv().cuMemAllocAsync(&p, size, reinterpret_cast<CUstream>(stream));
  *ptr = rc == CUDA_SUCCESS ? reinterpret_cast<void*>(p) : nullptr;
  return record(to_runtime(rc));
}

cudaError_t CUDARTAPI cudaFreeAsync(void* ptr, cudaStream_t stream) {
  if (cudaError_t e = ensure_context()) return record(e);
  return record(to_runtime(drv().cuMemFreeAsync(reinterpret_cast<CUdeviceptr>(ptr),
                                                reinterpret_cast<CUstream>(stream))));
}

cudaError_t CUDARTAPI cudaDeviceEnablePeerAccess(int peer, unsigned int flags) {
  if (cudaError_t e = ensure_context()) return record(e);
  CUcontext peer_ctx = nullptr;
  if (CUresult rc = drv().cuDevicePrimaryCtxRetain(&peer_ctx, peer)) return record(to_runtime(rc));
  return record(to_runtime(drv().cuCtxEnablePeerAccess(peer_ctx, flags)));
}

cudaError_t CUDARTAPI cudaDeviceDisablePeerAccess(int peer) {
  if (cudaError_t e = ensure_context()) return record(e);
  CUcontext peer_ctx = nullptr;
  if (CUresult rc = drv().cuDevicePrimaryCtxRetain(&peer_ctx, peer)) return record(to_runtime(rc));
  return record(to_runtime(drv().cuCtxDisablePeerAccess(peer_ctx)));
}

cudaError_t CUDARTAPI cudaIpcGetMemHandle(cudaIpcMemHandle_t* handle, void* ptr) {
  if (handle == nullptr) return record(cudaErrorInvalidValue);
  if (cudaError_t e = ensure_context()) return record(e);
  CUipcMemHandle h;
  CUresult rc = drv().cuIpcGetMemHandle(&h, reinterpret_cast<CUdeviceptr>(ptr));
  if (rc == CUDA_SUCCESS) std::memcpy(handle, &h, sizeof(h));
  return record(to_runtime(rc));
}

cudaError_t CUDARTAPI cudaRuntimeGetVersion(int* version) {
  if (version == nullptr) return record(cudaErrorInvalidValue);
  *version = 13000;
  return cudaSuccess;
}

// Entry points as the real runtime hands them out: whatever the driver's cuGetProcAddress gives.
cudaError_t CUDARTAPI cudaGetDriverEntryPointByVersion(const char* symbol, void** fn,
                                                       unsigned int version,
                                                       unsigned long long flags,
                                                       cudaDriverEntryPointQueryResult* status) {
  if (fn == nullptr || symbol == nullptr) return record(cudaErrorInvalidValue);
  const DriverTable& d = drv();
  if (d.init != CUDA_SUCCESS) return record(to_runtime(d.init));
  CUdriverProcAddressQueryResult drv_status = CU_GET_PROC_ADDRESS_SUCCESS;
  CUresult rc = d.getProcAddress(symbol, fn, static_cast<int>(version), flags, &drv_status);
  if (status) *status = static_cast<cudaDriverEntryPointQueryResult>(drv_status);
  if (rc == CUDA_ERROR_NOT_FOUND) return cudaSuccess;  // the status says which way it failed
  return record(to_runtime(rc));
}

cudaError_t CUDARTAPI cudaGetDriverEntryPoint(const char* symbol, void** fn,
                                              unsigned long long flags,
                                              cudaDriverEntryPointQueryResult* status) {
  return cudaGetDriverEntryPointByVersion(symbol, fn, kDriverVersionAsked, flags, status);
}

cudaError_t CUDARTAPI cudaGetLastError(void) {
  cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}

const char* CUDARTAPI cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    default:
      return "unknown error";
  }
}

const char* CUDARTAPI cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorIllegalAddress:
      return "cudaErrorIllegalAddress";
    default:
      return "cudaErrorUnknown";
  }
}

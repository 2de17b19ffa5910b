// An emulated CUDA runtime (libcudart.so.13) over the emulated driver: the subset that the test
// programs and gpusleep's hooks call. Like the real runtime it keeps a current device per thread
// and makes that device's primary context current on first use.
#include <cuda.h>
#include <cuda_runtime_api.h>

namespace {

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
  static const CUresult init = cuInit(0);
  if (init != CUDA_SUCCESS) return to_runtime(init);
  CUcontext current = nullptr;
  cuCtxGetCurrent(&current);
  if (current != nullptr) {
    CUdevice dev = -1;
    if (cuCtxGetDevice(&dev) == CUDA_SUCCESS && dev == t_device) return cudaSuccess;
  }
  CUcontext primary = nullptr;
  if (CUresult rc = cuDevicePrimaryCtxRetain(&primary, t_device)) return to_runtime(rc);
  return to_runtime(cuCtxSetCurrent(primary));
}

}  // namespace

cudaError_t CUDARTAPI cudaGetDeviceCount(int* count) {
  static const CUresult init = cuInit(0);
  if (init != CUDA_SUCCESS) return record(to_runtime(init));
  return record(to_runtime(cuDeviceGetCount(count)));
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
  CUresult rc = cuMemAlloc(&p, size);
  *ptr = rc == CUDA_SUCCESS ? reinterpret_cast<void*>(p) : nullptr;
  return record(to_runtime(rc));
}

cudaError_t CUDARTAPI cudaFree(void* ptr) {
  if (cudaError_t e = ensure_context()) return record(e);
  if (ptr == nullptr) return cudaSuccess;
  cuCtxSynchronize();
  return record(to_runtime(cuMemFree(reinterpret_cast<CUdeviceptr>(ptr))));
}

cudaError_t CUDARTAPI cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  if (cudaError_t e = ensure_context()) return record(e);
  switch (kind) {
    case cudaMemcpyHostToDevice:
      return record(to_runtime(cuMemcpyHtoD(reinterpret_cast<CUdeviceptr>(dst), src, count)));
    case cudaMemcpyDeviceToHost:
      return record(to_runtime(cuMemcpyDtoH(dst, reinterpret_cast<CUdeviceptr>(src), count)));
    default:
      return record(cudaErrorInvalidMemcpyDirection);
  }
}

cudaError_t CUDARTAPI cudaMemset(void* dst, int value, size_t count) {
  if (cudaError_t e = ensure_context()) return record(e);
  return record(to_runtime(
      cuMemsetD8(reinterpret_cast<CUdeviceptr>(dst), static_cast<unsigned char>(value), count)));
}

cudaError_t CUDARTAPI cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (cudaError_t e = ensure_context()) return record(e);
  return record(to_runtime(cuMemGetInfo(free_bytes, total_bytes)));
}

cudaError_t CUDARTAPI cudaDeviceSynchronize(void) {
  if (cudaError_t e = ensure_context()) return record(e);
  return record(to_runtime(cuCtxSynchronize()));
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
    default:
      return "cudaErrorUnknown";
  }
}

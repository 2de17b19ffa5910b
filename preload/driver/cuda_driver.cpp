// CudaDriver: the Driver interface over libcuda, resolved with dlopen/dlsym in one table.
#include "driver/cuda_driver.h"

#include <cuda.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstring>

namespace gpusleep {

// Driver entry points used by the core, by their ABI symbol names.
#define GPUSLEEP_DRIVER_SYMBOLS(X)     \
  X(cuInit)                            \
  X(cuDeviceGet)                       \
  X(cuDeviceGetCount)                  \
  X(cuDeviceGetAttribute)              \
  X(cuDevicePrimaryCtxRetain)          \
  X(cuCtxGetCurrent)                   \
  X(cuCtxSetCurrent)                   \
  X(cuCtxGetDevice)                    \
  X(cuCtxPushCurrent_v2)               \
  X(cuCtxPopCurrent_v2)                \
  X(cuCtxSynchronize)                  \
  X(cuThreadExchangeStreamCaptureMode) \
  X(cuMemGetInfo_v2)                   \
  X(cuMemGetAllocationGranularity)     \
  X(cuMemAddressReserve)               \
  X(cuMemAddressFree)                  \
  X(cuMemCreate)                       \
  X(cuMemRelease)                      \
  X(cuMemMap)                          \
  X(cuMemUnmap)                        \
  X(cuMemSetAccess)                    \
  X(cuMemHostRegister_v2)              \
  X(cuMemHostUnregister)               \
  X(cuStreamCreate)                    \
  X(cuStreamDestroy_v2)                \
  X(cuStreamSynchronize)               \
  X(cuMemcpyDtoHAsync_v2)              \
  X(cuMemcpyHtoDAsync_v2)              \
  X(cuEventCreate)                     \
  X(cuEventRecord)                     \
  X(cuEventSynchronize)                \
  X(cuEventDestroy_v2)                 \
  X(cuGetErrorName)                    \
  X(cuGetErrorString)

struct DriverApi {
#define GPUSLEEP_FIELD(name) decltype(&::name) name = nullptr;
  GPUSLEEP_DRIVER_SYMBOLS(GPUSLEEP_FIELD)
#undef GPUSLEEP_FIELD
};

namespace {
constexpr int kMaxDevices = 64;

CUmemAllocationProp allocation_prop(int device, bool rdma) {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device;
  prop.allocFlags.gpuDirectRDMACapable = rdma ? 1 : 0;
  return prop;
}
}  // namespace

std::unique_ptr<CudaDriver> CudaDriver::load(const std::string& library, std::string* error) {
  // The CUDA runtime has usually loaded the driver already; share its handle.
  void* lib = dlopen(library.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) lib = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    *error = "cannot load " + library + ": " + (why ? why : "unknown error");
    return nullptr;
  }
  auto api = std::make_unique<DriverApi>();
#define GPUSLEEP_RESOLVE(name)                                          \
  api->name = reinterpret_cast<decltype(api->name)>(dlsym(lib, #name)); \
  if (api->name == nullptr) {                                           \
    *error = library + " lacks " #name;                                 \
    dlclose(lib);                                                       \
    return nullptr;                                                     \
  }
  GPUSLEEP_DRIVER_SYMBOLS(GPUSLEEP_RESOLVE)
#undef GPUSLEEP_RESOLVE
  CUresult rc = api->cuInit(0);
  if (rc != CUDA_SUCCESS) {
    const char* name = nullptr;
    api->cuGetErrorName(rc, &name);
    *error = "cuInit failed: " + std::string(name ? name : "unknown error");
    dlclose(lib);
    return nullptr;
  }
  return std::unique_ptr<CudaDriver>(new CudaDriver(std::move(api)));
}

CudaDriver::CudaDriver(std::unique_ptr<DriverApi> api)
    : api_(std::move(api)), primary_(kMaxDevices, nullptr), rdma_(kMaxDevices, -1) {}

// The library stays loaded: the process's CUDA runtime shares it.
CudaDriver::~CudaDriver() = default;

DrvStatus CudaDriver::device_handle(int device, int* handle) {
  if (device < 0 || device >= kMaxDevices) return CUDA_ERROR_INVALID_DEVICE;
  CUdevice dev = 0;
  CUresult rc = api_->cuDeviceGet(&dev, device);
  *handle = dev;
  return rc;
}

DrvStatus CudaDriver::primary_context(int device, Context* ctx) {
  if (device < 0 || device >= kMaxDevices) return CUDA_ERROR_INVALID_DEVICE;
  std::lock_guard<std::mutex> lock(mu_);
  if (primary_[device] == nullptr) {
    int dev = 0;
    if (DrvStatus rc = device_handle(device, &dev)) return rc;
    CUcontext c = nullptr;
    if (CUresult rc = api_->cuDevicePrimaryCtxRetain(&c, dev)) return rc;
    primary_[device] = c;
  }
  *ctx = primary_[device];
  return CUDA_SUCCESS;
}

DrvStatus CudaDriver::ensure_context(int device, Context* ctx) {
  CUcontext current = nullptr;
  if (CUresult rc = api_->cuCtxGetCurrent(&current)) return rc;
  if (current != nullptr) {
    CUdevice current_dev = -1;
    int wanted = 0;
    if (api_->cuCtxGetDevice(&current_dev) == CUDA_SUCCESS &&
        device_handle(device, &wanted) == CUDA_SUCCESS && current_dev == wanted) {
      *ctx = current;
      return CUDA_SUCCESS;
    }
  }
  Context primary = nullptr;
  if (DrvStatus rc = primary_context(device, &primary)) return rc;
  if (CUresult rc = api_->cuCtxSetCurrent(static_cast<CUcontext>(primary))) return rc;
  *ctx = primary;
  return CUDA_SUCCESS;
}

DrvStatus CudaDriver::current_context(Context* ctx) {
  CUcontext c = nullptr;
  CUresult rc = api_->cuCtxGetCurrent(&c);
  *ctx = c;
  return rc;
}

DrvStatus CudaDriver::ordinal_of(int handle, int* device) {
  int count = 0;
  if (CUresult rc = api_->cuDeviceGetCount(&count)) return rc;
  for (int i = 0; i < count && i < kMaxDevices; ++i) {
    int h = -1;
    if (device_handle(i, &h) == CUDA_SUCCESS && h == handle) {
      *device = i;
      return CUDA_SUCCESS;
    }
  }
  return CUDA_ERROR_INVALID_DEVICE;
}

DrvStatus CudaDriver::current_device(int* device) {
  CUdevice dev = -1;
  if (CUresult rc = api_->cuCtxGetDevice(&dev)) return rc;
  return ordinal_of(dev, device);
}

DrvStatus CudaDriver::context_device(Context ctx, int* device) {
  if (CUresult rc = api_->cuCtxPushCurrent_v2(static_cast<CUcontext>(ctx))) return rc;
  CUdevice dev = -1;
  CUresult rc = api_->cuCtxGetDevice(&dev);
  CUcontext popped = nullptr;
  api_->cuCtxPopCurrent_v2(&popped);
  if (rc != CUDA_SUCCESS) return rc;
  return ordinal_of(dev, device);
}

DrvStatus CudaDriver::set_context(Context ctx) {
  return api_->cuCtxSetCurrent(static_cast<CUcontext>(ctx));
}

DrvStatus CudaDriver::synchronize(Context ctx) {
  if (CUresult rc = api_->cuCtxSetCurrent(static_cast<CUcontext>(ctx))) return rc;
  return api_->cuCtxSynchronize();
}

DrvStatus CudaDriver::thread_capture_relaxed(bool* relaxed) {
  CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
  if (CUresult rc = api_->cuThreadExchangeStreamCaptureMode(&mode)) return rc;
  *relaxed = mode == CU_STREAM_CAPTURE_MODE_RELAXED;
  return api_->cuThreadExchangeStreamCaptureMode(&mode);  // puts the previous mode back
}

DrvStatus CudaDriver::relax_capture_mode() {
  CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
  return api_->cuThreadExchangeStreamCaptureMode(&mode);
}

DrvStatus CudaDriver::vmm_supported(int device, bool* supported) {
  int dev = 0;
  if (DrvStatus rc = device_handle(device, &dev)) return rc;
  int value = 0;
  CUresult rc = api_->cuDeviceGetAttribute(
      &value, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, dev);
  *supported = rc == CUDA_SUCCESS && value != 0;
  return rc;
}

DrvStatus CudaDriver::granularity(int device, std::size_t* bytes) {
  CUmemAllocationProp prop = allocation_prop(device, false);
  return api_->cuMemGetAllocationGranularity(bytes, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
}

DrvStatus CudaDriver::memory_info(int device, std::size_t* free_bytes, std::size_t* total_bytes) {
  Context ctx = nullptr;
  if (DrvStatus rc = primary_context(device, &ctx)) return rc;
  if (CUresult rc = api_->cuCtxSetCurrent(static_cast<CUcontext>(ctx))) return rc;
  return api_->cuMemGetInfo_v2(free_bytes, total_bytes);
}

DrvStatus CudaDriver::reserve(std::size_t size, std::size_t alignment, DevicePtr* va) {
  CUdeviceptr ptr = 0;
  CUresult rc = api_->cuMemAddressReserve(&ptr, size, alignment, 0, 0);
  *va = ptr;
  return rc;
}

DrvStatus CudaDriver::unreserve(DevicePtr va, std::size_t size) {
  return api_->cuMemAddressFree(va, size);
}

DrvStatus CudaDriver::create(int device, std::size_t size, PhysHandle* handle) {
  if (device < 0 || device >= kMaxDevices) return CUDA_ERROR_INVALID_DEVICE;
  bool rdma = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (rdma_[device] < 0) {
      int dev = 0;
      int value = 0;
      rdma_[device] =
          device_handle(device, &dev) == CUDA_SUCCESS &&
                  api_->cuDeviceGetAttribute(
                      &value, CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED, dev) ==
                      CUDA_SUCCESS &&
                  value != 0
              ? 1
              : 0;
    }
    rdma = rdma_[device] == 1;
  }
  CUmemAllocationProp prop = allocation_prop(device, rdma);
  CUmemGenericAllocationHandle h = 0;
  CUresult rc = api_->cuMemCreate(&h, size, &prop, 0);
  *handle = h;
  return rc;
}

DrvStatus CudaDriver::create_like(const void* prop, std::size_t prop_size, std::size_t size,
                                  PhysHandle* handle) {
  if (prop == nullptr || prop_size != sizeof(CUmemAllocationProp)) return CUDA_ERROR_INVALID_VALUE;
  CUmemAllocationProp p;
  std::memcpy(&p, prop, sizeof p);
  CUmemGenericAllocationHandle h = 0;
  CUresult rc = api_->cuMemCreate(&h, size, &p, 0);
  *handle = h;
  return rc;
}

DrvStatus CudaDriver::release(PhysHandle handle) {
  return api_->cuMemRelease(handle);
}

DrvStatus CudaDriver::map(DevicePtr va, std::size_t size, PhysHandle handle) {
  return api_->cuMemMap(va, size, 0, handle, 0);
}

DrvStatus CudaDriver::unmap(DevicePtr va, std::size_t size) {
  return api_->cuMemUnmap(va, size);
}

DrvStatus CudaDriver::set_access(DevicePtr va, std::size_t size, int device) {
  CUmemAccessDesc desc{};
  desc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  desc.location.id = device;
  desc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  return api_->cuMemSetAccess(va, size, &desc, 1);
}

DrvStatus CudaDriver::set_access_flags(DevicePtr va, std::size_t size, int device, int flags) {
  CUmemAccessDesc desc{};
  desc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  desc.location.id = device;
  desc.flags = static_cast<CUmemAccess_flags>(flags);
  return api_->cuMemSetAccess(va, size, &desc, 1);
}

DrvStatus CudaDriver::host_register(void* ptr, std::size_t size) {
  return api_->cuMemHostRegister_v2(ptr, size, CU_MEMHOSTREGISTER_PORTABLE);
}

DrvStatus CudaDriver::host_unregister(void* ptr) {
  return api_->cuMemHostUnregister(ptr);
}

DrvStatus CudaDriver::stream_create(Stream* stream) {
  CUstream s = nullptr;
  CUresult rc = api_->cuStreamCreate(&s, CU_STREAM_NON_BLOCKING);
  *stream = s;
  return rc;
}

DrvStatus CudaDriver::stream_destroy(Stream stream) {
  return api_->cuStreamDestroy_v2(static_cast<CUstream>(stream));
}

DrvStatus CudaDriver::stream_synchronize(Stream stream) {
  return api_->cuStreamSynchronize(static_cast<CUstream>(stream));
}

DrvStatus CudaDriver::copy_to_host(void* host, DevicePtr src, std::size_t size, Stream stream) {
  return api_->cuMemcpyDtoHAsync_v2(host, src, size, static_cast<CUstream>(stream));
}

DrvStatus CudaDriver::copy_to_device(DevicePtr dst, const void* host, std::size_t size,
                                     Stream stream) {
  return api_->cuMemcpyHtoDAsync_v2(dst, host, size, static_cast<CUstream>(stream));
}

DrvStatus CudaDriver::event_record(Stream stream, Event* event) {
  CUevent e = nullptr;
  if (CUresult rc = api_->cuEventCreate(&e, CU_EVENT_DISABLE_TIMING)) return rc;
  CUresult rc = api_->cuEventRecord(e, static_cast<CUstream>(stream));
  if (rc != CUDA_SUCCESS) {
    api_->cuEventDestroy_v2(e);
    return rc;
  }
  *event = e;
  return CUDA_SUCCESS;
}

DrvStatus CudaDriver::event_synchronize(Event event) {
  return api_->cuEventSynchronize(static_cast<CUevent>(event));
}

DrvStatus CudaDriver::event_destroy(Event event) {
  return api_->cuEventDestroy_v2(static_cast<CUevent>(event));
}

std::string CudaDriver::describe(DrvStatus status) {
  const char* name = nullptr;
  const char* text = nullptr;
  api_->cuGetErrorName(static_cast<CUresult>(status), &name);
  api_->cuGetErrorString(static_cast<CUresult>(status), &text);
  char buf[64];
  std::snprintf(buf, sizeof buf, "CUDA error %d", status);
  std::string out = name ? name : buf;
  if (text) out += std::string(": ") + text;
  return out;
}

}  // namespace gpusleep

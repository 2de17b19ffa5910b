// The emulated driver: error names and strings, and cuGetProcAddress over its table of entry
// points.
#include <cstring>

#include "fake_driver.h"

using namespace fakecuda;

// ---- errors ----

namespace {

struct ErrorText {
  CUresult code;
  const char* name;
  const char* text;  // cuGetErrorString's; nullptr: "unknown error"
};

#define FAKE_ERROR(code, text) \
  { code, #code, text }
// The errors the emulated driver returns, with the names and texts the real one gives them.
constexpr ErrorText kErrors[] = {
    FAKE_ERROR(CUDA_SUCCESS, "no error"),
    FAKE_ERROR(CUDA_ERROR_INVALID_VALUE, "invalid argument"),
    FAKE_ERROR(CUDA_ERROR_OUT_OF_MEMORY, "out of memory"),
    FAKE_ERROR(CUDA_ERROR_NOT_INITIALIZED, "initialization error"),
    FAKE_ERROR(CUDA_ERROR_INVALID_DEVICE, nullptr),
    FAKE_ERROR(CUDA_ERROR_INVALID_CONTEXT, "invalid device context"),
    FAKE_ERROR(CUDA_ERROR_NOT_SUPPORTED, nullptr),
    FAKE_ERROR(CUDA_ERROR_ILLEGAL_ADDRESS, nullptr),
    FAKE_ERROR(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, nullptr),
    FAKE_ERROR(CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED, nullptr),
};
#undef FAKE_ERROR

const ErrorText* error_text(CUresult error) {
  for (const ErrorText& e : kErrors) {
    if (e.code == error) return &e;
  }
  return nullptr;
}

}  // namespace

CUresult CUDAAPI cuGetErrorName(CUresult error, const char** name) {
  if (name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  const ErrorText* e = error_text(error);
  *name = e != nullptr ? e->name : "CUDA_ERROR_UNKNOWN";
  return e != nullptr ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult CUDAAPI cuGetErrorString(CUresult error, const char** text) {
  if (text == nullptr) return CUDA_ERROR_INVALID_VALUE;
  const ErrorText* e = error_text(error);
  *text = e != nullptr && e->text != nullptr ? e->text : "unknown error";
  return CUDA_SUCCESS;
}

// ---- entry points ----

CUresult CUDAAPI cuGetExportTable(const void** table, const CUuuid*) {
  if (table == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return CUDA_ERROR_NOT_SUPPORTED;
}

namespace {
struct Entry {
  const char* name;  // as cuGetProcAddress is asked, without ABI suffix
  int since;         // the first CUDA version with this ABI
  void* legacy;      // the function for the legacy default stream
  void* per_thread;  // its per-thread-default-stream variant (null: same as legacy)
};

#define FAKE_FN(f) reinterpret_cast<void*>(&f)
// The driver's table of entry points, newest ABI of each name last. The library is linked with
// -Bsymbolic, so these are its own functions even when another object exports the same names.
const Entry kEntries[] = {
    {"cuInit", 2000, FAKE_FN(cuInit), nullptr},
    {"cuDriverGetVersion", 2020, FAKE_FN(cuDriverGetVersion), nullptr},
    {"cuDeviceGet", 2000, FAKE_FN(cuDeviceGet), nullptr},
    {"cuDeviceGetCount", 2000, FAKE_FN(cuDeviceGetCount), nullptr},
    {"cuDeviceGetName", 2000, FAKE_FN(cuDeviceGetName), nullptr},
    {"cuDeviceGetAttribute", 2000, FAKE_FN(cuDeviceGetAttribute), nullptr},
    {"cuDevicePrimaryCtxRetain", 7000, FAKE_FN(cuDevicePrimaryCtxRetain), nullptr},
    {"cuCtxGetCurrent", 4000, FAKE_FN(cuCtxGetCurrent), nullptr},
    {"cuCtxSetCurrent", 4000, FAKE_FN(cuCtxSetCurrent), nullptr},
    {"cuCtxGetDevice", 2000, FAKE_FN(cuCtxGetDevice), nullptr},
    {"cuCtxSynchronize", 2000, FAKE_FN(cuCtxSynchronize), nullptr},
    {"cuCtxPushCurrent", 4000, FAKE_FN(cuCtxPushCurrent), nullptr},
    {"cuCtxPopCurrent", 4000, FAKE_FN(cuCtxPopCurrent), nullptr},
    {"cuCtxEnablePeerAccess", 4000, FAKE_FN(cuCtxEnablePeerAccess), nullptr},
    {"cuCtxDisablePeerAccess", 4000, FAKE_FN(cuCtxDisablePeerAccess), nullptr},
    {"cuMemGetInfo", 3020, FAKE_FN(cuMemGetInfo), nullptr},
    {"cuMemAlloc", 2000, FAKE_FN(fake_cuMemAlloc_v1), nullptr},
    {"cuMemAlloc", 3020, FAKE_FN(cuMemAlloc), nullptr},
    {"cuMemAllocPitch", 3020, FAKE_FN(cuMemAllocPitch), nullptr},
    {"cuMemFree", 3020, FAKE_FN(cuMemFree), nullptr},
    {"cuMemAllocAsync", 11020, FAKE_FN(cuMemAllocAsync), FAKE_FN(cuMemAllocAsync_ptsz)},
    {"cuMemAllocFromPoolAsync", 11020, FAKE_FN(cuMemAllocFromPoolAsync),
     FAKE_FN(cuMemAllocFromPoolAsync_ptsz)},
    {"cuMemFreeAsync", 11020, FAKE_FN(cuMemFreeAsync), FAKE_FN(cuMemFreeAsync_ptsz)},
    {"cuMemCreate", 10020, FAKE_FN(cuMemCreate), nullptr},
    {"cuMemRelease", 10020, FAKE_FN(cuMemRelease), nullptr},
    {"cuMemMap", 10020, FAKE_FN(cuMemMap), nullptr},
    {"cuMemUnmap", 10020, FAKE_FN(cuMemUnmap), nullptr},
    {"cuMemSetAccess", 10020, FAKE_FN(cuMemSetAccess), nullptr},
    {"cuMemRetainAllocationHandle", 11000, FAKE_FN(cuMemRetainAllocationHandle), nullptr},
    {"cuMemExportToShareableHandle", 10020, FAKE_FN(cuMemExportToShareableHandle), nullptr},
    {"cuMemAddressReserve", 10020, FAKE_FN(cuMemAddressReserve), nullptr},
    {"cuMemAddressFree", 10020, FAKE_FN(cuMemAddressFree), nullptr},
    {"cuMemGetAllocationGranularity", 10020, FAKE_FN(cuMemGetAllocationGranularity), nullptr},
    {"cuIpcGetMemHandle", 4010, FAKE_FN(cuIpcGetMemHandle), nullptr},
    {"cuMemcpyHtoD", 3020, FAKE_FN(cuMemcpyHtoD), nullptr},
    {"cuMemcpyDtoH", 3020, FAKE_FN(cuMemcpyDtoH), nullptr},
    {"cuMemsetD8", 3020, FAKE_FN(cuMemsetD8), nullptr},
    {"cuLaunchKernel", 4000, FAKE_FN(cuLaunchKernel), FAKE_FN(cuLaunchKernel_ptsz)},
    {"cuGraphLaunch", 10000, FAKE_FN(cuGraphLaunch), FAKE_FN(cuGraphLaunch_ptsz)},
    {"cuGetErrorName", 6000, FAKE_FN(cuGetErrorName), nullptr},
    {"cuGetErrorString", 6000, FAKE_FN(cuGetErrorString), nullptr},
    {"cuGetExportTable", 3000, FAKE_FN(cuGetExportTable), nullptr},
    {"cuGetProcAddress", 11030, FAKE_FN(fake_cuGetProcAddress_v1), nullptr},
    {"cuGetProcAddress", 12000, FAKE_FN(cuGetProcAddress_v2), nullptr},
};
#undef FAKE_FN

CUresult lookup(const char* symbol, void** pfn, int version, cuuint64_t flags,
                CUdriverProcAddressQueryResult* status) {
  if (symbol == nullptr || pfn == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *pfn = nullptr;
  const Entry* best = nullptr;
  bool known = false;
  for (const Entry& e : kEntries) {
    if (std::strcmp(e.name, symbol) != 0) continue;
    known = true;
    if (e.since <= version) best = &e;
  }
  if (best == nullptr) {
    if (status) {
      *status =
          known ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    }
    return CUDA_ERROR_NOT_FOUND;
  }
  bool per_thread = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
  *pfn = per_thread && best->per_thread ? best->per_thread : best->legacy;
  if (status) *status = CU_GET_PROC_ADDRESS_SUCCESS;
  return CUDA_SUCCESS;
}
}  // namespace

CUresult CUDAAPI cuGetProcAddress(const char* symbol, void** pfn, int version, cuuint64_t flags,
                                  CUdriverProcAddressQueryResult* status) {
  return lookup(symbol, pfn, version, flags, status);
}

// The CUDA 11.3 ABI, exported as "cuGetProcAddress" like the real driver does.
extern "C" CUresult CUDAAPI fake_cuGetProcAddress_v1(const char* symbol, void** pfn, int version,
                                                     cuuint64_t flags) {
  return lookup(symbol, pfn, version, flags, nullptr);
}
extern "C" CUresult CUDAAPI fake_export_cuGetProcAddress(const char*, void**, int,
                                                         cuuint64_t) __asm__("cuGetProcAddress")
    __attribute__((alias("fake_cuGetProcAddress_v1")));

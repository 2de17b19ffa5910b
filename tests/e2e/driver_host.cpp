// A host program that reaches the driver the way programs without the dynamic CUDA runtime do:
// it never links libcuda or libcudart, it loads them and looks functions up. How it looks them up
// is its first argument:
//   getproc     dlsym(libcuda, "cuGetProcAddress_v2"), then cuGetProcAddress for everything,
//               cuGetProcAddress itself included (as the static runtime and CuPy do)
//   getproc_v1  the same through the CUDA 11.3 ABI, dlsym(libcuda, "cuGetProcAddress")
//   dlsym       dlsym(libcuda, "<ABI symbol>") for each function (as JAX/XLA do)
//   runtime     the runtime's cudaGetDriverEntryPointByVersion (as PyTorch does)
// Commands on stdin, one line answered each ("OK ..." or "ERR ..."); "READY" first:
//   alloc NAME BYTES SEED     cuMemAlloc, filled with a pattern by "kernel"
//   pitch NAME WIDTH HEIGHT SEED   cuMemAllocPitch; answers the pitch
//   check NAME                copy back with cuMemcpyDtoH and compare with the pattern
//   free NAME                 cuMemFree
//   async NAME BYTES          cuMemAllocAsync     freeasync NAME   cuMemFreeAsync
//   vmm NAME BYTES            reserve, cuMemCreate, cuMemMap, cuMemSetAccess (its own VMM)
//   vmmrelease NAME           cuMemRelease of its handle (the mapping stays)
//   vmmunmap NAME             cuMemUnmap and free the reservation
//   vmmaccess NAME            cuMemSetAccess again; answers the driver's status
//   retain NAME               cuMemRetainAllocationHandle: "OK same" if it gives its handle back
//   export NAME               cuMemExportToShareableHandle (a file descriptor); the status
//   ipc NAME                  cuIpcGetMemHandle; answers the driver's status
//   device D                  make device D's primary context current
//   peer OWNER                cuCtxEnablePeerAccess from the current device to OWNER
//   kernel D NAME             may a kernel on device D use the buffer? (emulated driver only)
//   whois API VERSION FLAGS   which library the looked-up function lives in
//   launch NAME               a kernel (cuLaunchKernel) that counts the buffer's words that differ
//                             from the pattern: "OK launch N", or "ERR launch STATUS"
#include <cuda.h>
#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#undef cuGetProcAddress

namespace {

using GetProcV2 = CUresult (*)(const char*, void**, int, cuuint64_t,
                               CUdriverProcAddressQueryResult*);
using GetProcV1 = CUresult (*)(const char*, void**, int, cuuint64_t);
using EntryByVersion = int (*)(const char*, void**, unsigned int, unsigned long long, int*);

std::string g_mode;
void* g_cuda = nullptr;
GetProcV2 g_getproc = nullptr;
GetProcV1 g_getproc_v1 = nullptr;
EntryByVersion g_entry = nullptr;

// (api name, ABI symbol) of what the program uses.
void* lookup(const char* api, const char* abi, int version = 13000, cuuint64_t flags = 0) {
  void* fn = nullptr;
  if (g_mode == "dlsym") return dlsym(g_cuda, abi);
  if (g_mode == "getproc") {
    CUdriverProcAddressQueryResult status;
    return g_getproc(api, &fn, version, flags, &status) == CUDA_SUCCESS ? fn : nullptr;
  }
  if (g_mode == "getproc_v1") {
    return g_getproc_v1(api, &fn, version, flags) == CUDA_SUCCESS ? fn : nullptr;
  }
  int status = 0;
  return g_entry(api, &fn, static_cast<unsigned>(version), flags, &status) == 0 ? fn : nullptr;
}

template <typename F>
bool get(F* out, const char* api, const char* abi) {
  *out = reinterpret_cast<F>(lookup(api, abi));
  return *out != nullptr;
}

struct Api {
  decltype(&::cuInit) init;
  decltype(&::cuDevicePrimaryCtxRetain) retain;
  decltype(&::cuCtxSetCurrent) set_current;
  decltype(&::cuMemAlloc_v2) alloc;
  decltype(&::cuMemAllocPitch_v2) alloc_pitch;
  decltype(&::cuMemFree_v2) free;
  decltype(&::cuMemcpyDtoH_v2) dtoh;
  decltype(&::cuMemAllocAsync) alloc_async;
  decltype(&::cuMemFreeAsync) free_async;
  decltype(&::cuMemAddressReserve) reserve;
  decltype(&::cuMemAddressFree) address_free;
  decltype(&::cuMemCreate) create;
  decltype(&::cuMemRelease) release;
  decltype(&::cuMemMap) map;
  decltype(&::cuMemUnmap) unmap;
  decltype(&::cuMemSetAccess) set_access;
  decltype(&::cuIpcGetMemHandle) ipc;
  decltype(&::cuCtxEnablePeerAccess) enable_peer;
  decltype(&::cuMemRetainAllocationHandle) retain_handle;
  decltype(&::cuMemExportToShareableHandle) export_handle;
  decltype(&::cuLaunchKernel) launch;
} g;

struct Buffer {
  CUdeviceptr ptr = 0;
  std::size_t bytes = 0;
  std::uint64_t seed = 0;
  CUmemGenericAllocationHandle handle = 0;
};
std::map<std::string, Buffer> g_buffers;

std::uint64_t pattern(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t z = seed + i * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  return z ^ (z >> 31);
}

void fill(const Buffer& b) {  // the "kernel": device memory is host memory in the emulation
  auto* p = reinterpret_cast<std::uint64_t*>(b.ptr);
  for (std::size_t i = 0; i < b.bytes / 8; ++i)
    p[i] = pattern(b.seed, i);
}

// A kernel of the emulated driver (fakecuda.h): a host function over device memory.
struct VerifyArgs {
  const std::uint64_t* words;
  std::size_t n;
  std::uint64_t seed;
  std::uint64_t* bad;  // host memory
};

void verify_kernel(void** params) {
  const VerifyArgs& v = **static_cast<VerifyArgs**>(params[0]);
  std::uint64_t bad = 0;
  for (std::size_t i = 0; i < v.n; ++i)
    bad += v.words[i] != pattern(v.seed, i) ? 1 : 0;
  *v.bad = bad;
}

void reply(const std::string& s) {
  std::cout << s << std::endl;
}

bool setup() {
  g_cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (g_cuda == nullptr) return false;
  if (g_mode == "getproc") {
    auto first = reinterpret_cast<GetProcV2>(dlsym(g_cuda, "cuGetProcAddress_v2"));
    if (first == nullptr) return false;
    // Programs ask cuGetProcAddress for itself and use what it answers from then on.
    void* self = nullptr;
    CUdriverProcAddressQueryResult status;
    if (first("cuGetProcAddress", &self, 13000, 0, &status) != CUDA_SUCCESS) return false;
    g_getproc = reinterpret_cast<GetProcV2>(self);
  } else if (g_mode == "getproc_v1") {
    g_getproc_v1 = reinterpret_cast<GetProcV1>(dlsym(g_cuda, "cuGetProcAddress"));
    if (g_getproc_v1 == nullptr) return false;
  } else if (g_mode == "runtime") {
    void* rt = dlopen("libcudart.so.13", RTLD_NOW | RTLD_LOCAL);
    if (rt == nullptr) return false;
    g_entry = reinterpret_cast<EntryByVersion>(dlsym(rt, "cudaGetDriverEntryPointByVersion"));
    int (*count)(int*) = reinterpret_cast<int (*)(int*)>(dlsym(rt, "cudaGetDeviceCount"));
    int n = 0;
    if (g_entry == nullptr || count == nullptr || count(&n) != 0) return false;
  } else if (g_mode != "dlsym") {
    return false;
  }
  return get(&g.init, "cuInit", "cuInit") &&
         get(&g.retain, "cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRetain") &&
         get(&g.set_current, "cuCtxSetCurrent", "cuCtxSetCurrent") &&
         get(&g.alloc, "cuMemAlloc", "cuMemAlloc_v2") &&
         get(&g.alloc_pitch, "cuMemAllocPitch", "cuMemAllocPitch_v2") &&
         get(&g.free, "cuMemFree", "cuMemFree_v2") &&
         get(&g.dtoh, "cuMemcpyDtoH", "cuMemcpyDtoH_v2") &&
         get(&g.alloc_async, "cuMemAllocAsync", "cuMemAllocAsync") &&
         get(&g.free_async, "cuMemFreeAsync", "cuMemFreeAsync") &&
         get(&g.reserve, "cuMemAddressReserve", "cuMemAddressReserve") &&
         get(&g.address_free, "cuMemAddressFree", "cuMemAddressFree") &&
         get(&g.create, "cuMemCreate", "cuMemCreate") &&
         get(&g.release, "cuMemRelease", "cuMemRelease") && get(&g.map, "cuMemMap", "cuMemMap") &&
         get(&g.unmap, "cuMemUnmap", "cuMemUnmap") &&
         get(&g.set_access, "cuMemSetAccess", "cuMemSetAccess") &&
         get(&g.ipc, "cuIpcGetMemHandle", "cuIpcGetMemHandle") &&
         get(&g.enable_peer, "cuCtxEnablePeerAccess", "cuCtxEnablePeerAccess") &&
         get(&g.retain_handle, "cuMemRetainAllocationHandle", "cuMemRetainAllocationHandle") &&
         get(&g.export_handle, "cuMemExportToShareableHandle", "cuMemExportToShareableHandle") &&
         get(&g.launch, "cuLaunchKernel", "cuLaunchKernel");
}

bool make_current(int device) {
  CUcontext ctx = nullptr;
  return g.retain(&ctx, device) == CUDA_SUCCESS && g.set_current(ctx) == CUDA_SUCCESS;
}

std::string where(const void* fn) {
  Dl_info info{};
  if (fn == nullptr || dladdr(fn, &info) == 0 || info.dli_fname == nullptr) return "none";
  const char* base = std::strrchr(info.dli_fname, '/');
  return base ? base + 1 : info.dli_fname;
}

void run(const std::string& line) {
  std::istringstream in(line);
  std::string cmd, name;
  in >> cmd;
  if (cmd == "alloc" || cmd == "async") {
    Buffer b;
    in >> name >> b.bytes >> b.seed;
    CUresult rc =
        cmd == "alloc" ? g.alloc(&b.ptr, b.bytes) : g.alloc_async(&b.ptr, b.bytes, nullptr);
    if (rc != CUDA_SUCCESS) return reply("ERR alloc " + std::to_string(rc));
    fill(b);
    g_buffers[name] = b;
    return reply("OK " + std::to_string(b.ptr));
  }
  if (cmd == "pitch") {
    Buffer b;
    std::size_t width = 0, height = 0, pitch = 0;
    in >> name >> width >> height >> b.seed;
    CUresult rc = g.alloc_pitch(&b.ptr, &pitch, width, height, 4);
    if (rc != CUDA_SUCCESS) return reply("ERR pitch " + std::to_string(rc));
    b.bytes = pitch * height;
    fill(b);
    g_buffers[name] = b;
    return reply("OK " + std::to_string(pitch));
  }
  if (cmd == "vmm") {
    Buffer b;
    in >> name >> b.bytes;
    b.seed = 7;
    CUmemAllocationProp prop{};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = 0;
    CUmemAccessDesc access{};
    access.location = prop.location;
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    if (g.reserve(&b.ptr, b.bytes, 0, 0, 0) != CUDA_SUCCESS ||
        g.create(&b.handle, b.bytes, &prop, 0) != CUDA_SUCCESS ||
        g.map(b.ptr, b.bytes, 0, b.handle, 0) != CUDA_SUCCESS ||
        g.set_access(b.ptr, b.bytes, &access, 1) != CUDA_SUCCESS) {
      return reply("ERR vmm");
    }
    fill(b);
    g_buffers[name] = b;
    return reply("OK");
  }
  if (cmd == "whois") {
    std::string api;
    int version = 0;
    unsigned long long flags = 0;
    in >> api >> version >> flags;
    return reply("OK " + where(lookup(api.c_str(), api.c_str(), version, flags)));
  }
  if (cmd == "device") {
    int d = 0;
    in >> d;
    return reply(make_current(d) ? "OK" : "ERR device");
  }
  if (cmd == "peer") {
    int owner = 0;
    in >> owner;
    CUcontext peer = nullptr;
    if (g.retain(&peer, owner) != CUDA_SUCCESS) return reply("ERR retain");
    CUresult rc = g.enable_peer(peer, 0);
    return reply(rc == CUDA_SUCCESS ? "OK" : "ERR peer " + std::to_string(rc));
  }
  if (cmd == "exit") std::exit(0);
  in >> name;
  auto it = g_buffers.find(name);
  if (cmd == "kernel") {
    int device = std::stoi(name);
    in >> name;
    it = g_buffers.find(name);
    auto access = reinterpret_cast<int (*)(int, std::uint64_t, std::uint64_t)>(
        dlsym(g_cuda, "fakecuda_kernel_access"));
    if (it == g_buffers.end() || access == nullptr) return reply("ERR kernel");
    return reply("OK " + std::to_string(access(device, it->second.ptr, it->second.bytes)));
  }
  if (it == g_buffers.end()) return reply("ERR no buffer " + name);
  Buffer& b = it->second;
  if (cmd == "check") {
    std::vector<std::uint64_t> host(b.bytes / 8);
    if (CUresult rc = g.dtoh(host.data(), b.ptr, host.size() * 8)) {
      return reply("ERR copy " + std::to_string(rc));
    }
    for (std::size_t i = 0; i < host.size(); ++i) {
      if (host[i] != pattern(b.seed, i)) return reply("ERR mismatch at word " + std::to_string(i));
    }
    return reply("OK");
  }
  if (cmd == "free" || cmd == "freeasync") {
    CUresult rc = cmd == "free" ? g.free(b.ptr) : g.free_async(b.ptr, nullptr);
    g_buffers.erase(it);
    return reply(rc == CUDA_SUCCESS ? "OK" : "ERR free " + std::to_string(rc));
  }
  if (cmd == "launch") {
    std::uint64_t bad = 0;
    VerifyArgs args{reinterpret_cast<const std::uint64_t*>(b.ptr), b.bytes / 8, b.seed, &bad};
    VerifyArgs* argp = &args;
    void* params[] = {&argp};
    CUresult rc = g.launch(reinterpret_cast<CUfunction>(&verify_kernel), 1, 1, 1, 1, 1, 1, 0,
                           nullptr, params, nullptr);
    if (rc != CUDA_SUCCESS) return reply("ERR launch " + std::to_string(rc));
    return reply("OK launch " + std::to_string(bad));
  }
  if (cmd == "vmmrelease") return reply(g.release(b.handle) == CUDA_SUCCESS ? "OK" : "ERR release");
  if (cmd == "vmmunmap") {
    bool ok =
        g.unmap(b.ptr, b.bytes) == CUDA_SUCCESS && g.address_free(b.ptr, b.bytes) == CUDA_SUCCESS;
    g_buffers.erase(it);
    return reply(ok ? "OK" : "ERR unmap");
  }
  if (cmd == "vmmaccess") {
    CUmemAccessDesc access{};
    access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    access.location.id = 0;
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    return reply("OK " + std::to_string(g.set_access(b.ptr, b.bytes, &access, 1)));
  }
  if (cmd == "retain") {
    CUmemGenericAllocationHandle h = 0;
    CUresult rc = g.retain_handle(&h, reinterpret_cast<void*>(b.ptr));
    if (rc != CUDA_SUCCESS) return reply("ERR retain " + std::to_string(rc));
    if (h != b.handle) return reply("OK other");
    CUresult rel = g.release(h);  // give the extra reference back
    return reply(rel == CUDA_SUCCESS ? "OK same" : "ERR release " + std::to_string(rel));
  }
  if (cmd == "export") {
    int fd = -1;
    CUresult rc = g.export_handle(&fd, b.handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
    return reply("OK " + std::to_string(rc));
  }
  if (cmd == "ipc") {
    CUipcMemHandle h;
    return reply("OK " + std::to_string(g.ipc(&h, b.ptr)));
  }
  reply("ERR unknown command " + cmd);
}

}  // namespace

int main(int argc, char** argv) {
  g_mode = argc > 1 ? argv[1] : "getproc";
  if (!setup() || g.init(0) != CUDA_SUCCESS || !make_current(0)) {
    std::cout << "ERR setup (" << g_mode << ")" << std::endl;
    return 1;
  }
  std::cout << "READY" << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (!line.empty()) run(line);
  }
  return 0;
}

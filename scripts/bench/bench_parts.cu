// The costs of the parts a sleep and a wake are made of, measured apart, on the GPU machine:
//   vmm    per-call cost of the driver's virtual-memory calls for 1,000 small handles, one call
//          per handle against one call over a run of adjacent mappings
//   vmt    the same calls spread over threads
//   order  the driver's calls for many handles, per handle in turn or each call over a batch
//   pin    variants of host-memory preparation (piece sizes, memory never backed before)
//   host   host-memory preparation on N threads: touching fresh pages, registering them, copying
//          into fresh or touched pages
//   staged a device-to-host copy through a small pinned ring into fresh unpinned memory, and back
//   first  a first sleep into unprepared memory, end to end, with its preparation arranged on
//          threads in different ways
// Prints one "RESULT {json}" line.
// Usage: bench_parts [--gib G] [--parts vmm,vmt,order,pin,host,staged,first]
#include <cuda.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#define DRV(x)                                                                  \
  do {                                                                          \
    CUresult r_ = (x);                                                          \
    if (r_ != CUDA_SUCCESS) {                                                   \
      const char* s_ = nullptr;                                                 \
      cuGetErrorString(r_, &s_);                                                \
      std::printf("ERR %s:%d %s: %s\n", __FILE__, __LINE__, #x, s_ ? s_ : "?"); \
      std::exit(1);                                                             \
    }                                                                           \
  } while (0)

namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;
constexpr std::size_t GiB = std::size_t{1} << 30;
constexpr std::size_t kPiece = 256 * MiB;

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string json;
void add(const char* key, double v) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "%s\"%s\":%.4g", json.empty() ? "" : ",", key, v);
  json += buf;
  std::printf("  %-40s %.4g\n", key, v);
  std::fflush(stdout);
}

CUdevice dev;
CUcontext ctx;

// Runs fn(i) for i in [0, n) on `threads` threads (dynamic assignment); returns seconds.
double parallel(int threads, std::size_t n, const std::function<void(std::size_t)>& fn) {
  std::atomic<std::size_t> next{0};
  double t = now();
  std::vector<std::thread> ts;
  for (int k = 0; k < threads; ++k) {
    ts.emplace_back([&] {
      cuCtxSetCurrent(ctx);
      for (std::size_t i; (i = next++) < n;)
        fn(i);
    });
  }
  for (auto& th : ts)
    th.join();
  return now() - t;
}

// Yields until `a` reaches at least `v` (the benchmarks' threads hand work on by counters).
template <typename T>
void spin_until(const std::atomic<T>& a, typename std::atomic<T>::value_type v) {
  while (a.load(std::memory_order_acquire) < v)
    std::this_thread::yield();
}

char* fresh(std::size_t bytes) {
  void* p = mmap(nullptr, bytes + 2 * MiB, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    std::printf("ERR mmap\n");
    std::exit(1);
  }
  char* a =
      reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(p) + 2 * MiB - 1) & ~(2 * MiB - 1));
  madvise(a, bytes, MADV_HUGEPAGE);
  return a;
}

// Pinned memory at location 0 of `where` (the GPU, or the host's NUMA node), and read-write
// access for it.
CUmemAllocationProp pinned_prop(CUmemLocationType where) {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = where;
  prop.location.id = 0;
  return prop;
}

CUmemAccessDesc read_write(CUmemLocationType where) {
  CUmemAccessDesc acc{};
  acc.location.type = where;
  acc.location.id = 0;
  acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  return acc;
}

void touch(char* p, std::size_t n) {
  volatile char* v = p;
  for (std::size_t off = 0; off < n; off += 4096)
    v[off] = 0;
}

void vmm_part(std::size_t n, std::size_t size, const char* label) {
  std::vector<CUmemGenericAllocationHandle> h(n);
  const CUmemAllocationProp prop = pinned_prop(CU_MEM_LOCATION_TYPE_DEVICE);
  const CUmemAccessDesc acc = read_write(CU_MEM_LOCATION_TYPE_DEVICE);
  auto per = [&](const char* what, double s) {
    std::string k = std::string(label) + "." + what + "_us";
    add(k.c_str(), s / n * 1e6);
  };
  // Reservations one by one.
  std::vector<CUdeviceptr> vas(n);
  double t = now();
  for (std::size_t i = 0; i < n; ++i)
    DRV(cuMemAddressReserve(&vas[i], size, 0, 0, 0));
  per("reserve", now() - t);
  t = now();
  for (std::size_t i = 0; i < n; ++i)
    DRV(cuMemAddressFree(vas[i], size));
  per("unreserve", now() - t);

  CUdeviceptr base = 0;
  DRV(cuMemAddressReserve(&base, n * size, 0, 0, 0));
  for (int batched = 0; batched < 3; ++batched) {
    // batched 0: a call per handle; 1: access and unmap over the whole run; 2: handles released
    // right after mapping, so the unmap alone frees the memory.
    const char* mode = batched == 0 ? "each" : batched == 1 ? "run" : "run_noref";
    auto key = [&](const char* w) { return std::string(mode) + "_" + w; };
    std::size_t free0 = 0, total = 0, free1 = 0, free2 = 0;
    DRV(cuMemGetInfo(&free0, &total));
    t = now();
    for (std::size_t i = 0; i < n; ++i)
      DRV(cuMemCreate(&h[i], size, &prop, 0));
    per(key("create").c_str(), now() - t);
    t = now();
    for (std::size_t i = 0; i < n; ++i)
      DRV(cuMemMap(base + i * size, size, 0, h[i], 0));
    per(key("map").c_str(), now() - t);
    t = now();
    if (batched == 0) {
      for (std::size_t i = 0; i < n; ++i)
        DRV(cuMemSetAccess(base + i * size, size, &acc, 1));
    } else {
      DRV(cuMemSetAccess(base, n * size, &acc, 1));
    }
    per(key("set_access").c_str(), now() - t);
    DRV(cuMemsetD8(base, 7, n * size));
    DRV(cuCtxSynchronize());
    if (batched == 2) {
      t = now();
      for (std::size_t i = 0; i < n; ++i)
        DRV(cuMemRelease(h[i]));
      per(key("release_mapped").c_str(), now() - t);
    }
    DRV(cuMemGetInfo(&free1, &total));
    t = now();
    if (batched == 0) {
      for (std::size_t i = 0; i < n; ++i)
        DRV(cuMemUnmap(base + i * size, size));
    } else {
      CUresult r = cuMemUnmap(base, n * size);
      add((std::string(label) + "." + key("unmap_ok")).c_str(), r == CUDA_SUCCESS);
      if (r != CUDA_SUCCESS) {
        for (std::size_t i = 0; i < n; ++i)
          DRV(cuMemUnmap(base + i * size, size));
      }
    }
    per(key("unmap").c_str(), now() - t);
    if (batched != 2) {
      t = now();
      for (std::size_t i = 0; i < n; ++i)
        DRV(cuMemRelease(h[i]));
      per(key("release").c_str(), now() - t);
    }
    DRV(cuMemGetInfo(&free2, &total));
    add((std::string(label) + "." + key("freed_mib")).c_str(),
        (double(free2) - double(free1)) / MiB);
  }
  DRV(cuMemAddressFree(base, n * size));
}

// Median cost of each step of an allocation and a free through the virtual-memory calls, next to
// cuMemAlloc / cuMemFree, at `size` bytes.
void alloc_part(std::size_t size, int reps) {
  const CUmemAllocationProp prop = pinned_prop(CU_MEM_LOCATION_TYPE_DEVICE);
  const CUmemAccessDesc acc = read_write(CU_MEM_LOCATION_TYPE_DEVICE);
  const char* names[] = {"plain_alloc", "plain_free", "reserve", "create",   "map",
                         "set_access",  "unmap",      "release", "unreserve"};
  constexpr int kSteps = 9;
  std::vector<std::vector<double>> us(kSteps);
  for (int r = 0; r < reps; ++r) {
    double t[kSteps + 1];
    CUdeviceptr p = 0, va = 0;
    CUmemGenericAllocationHandle h;
    t[0] = now();
    DRV(cuMemAlloc(&p, size));
    t[1] = now();
    DRV(cuMemFree(p));
    t[2] = now();
    DRV(cuMemAddressReserve(&va, size, 0, 0, 0));
    t[3] = now();
    DRV(cuMemCreate(&h, size, &prop, 0));
    t[4] = now();
    DRV(cuMemMap(va, size, 0, h, 0));
    t[5] = now();
    DRV(cuMemSetAccess(va, size, &acc, 1));
    t[6] = now();
    DRV(cuMemUnmap(va, size));
    t[7] = now();
    DRV(cuMemRelease(h));
    t[8] = now();
    DRV(cuMemAddressFree(va, size));
    t[9] = now();
    for (int k = 0; k < kSteps; ++k)
      us[k].push_back((t[k + 1] - t[k]) * 1e6);
  }
  for (int k = 0; k < kSteps; ++k) {
    std::sort(us[k].begin(), us[k].end());
    std::string key = "alloc" + std::to_string(size / MiB) + "m." + names[k] + "_us";
    add(key.c_str(), us[k][us[k].size() / 2]);
  }
}

void host_part(std::size_t bytes, const std::vector<int>& thread_counts) {
  const std::size_t pieces = bytes / kPiece;
  char* src = nullptr;  // a touched source for copies
  src = fresh(kPiece);
  touch(src, kPiece);
  std::memset(src, 3, kPiece);
  for (int th : thread_counts) {
    auto key = [&](const char* w) { return "host.t" + std::to_string(th) + "." + w + "_gbps"; };
    char* a = fresh(bytes);
    double s = parallel(th, pieces, [&](std::size_t i) { touch(a + i * kPiece, kPiece); });
    add(key("touch").c_str(), bytes / s / 1e9);
    s = parallel(th, pieces,
                 [&](std::size_t i) { DRV(cuMemHostRegister(a + i * kPiece, kPiece, 0)); });
    add(key("register_touched").c_str(), bytes / s / 1e9);
    s = parallel(th, pieces, [&](std::size_t i) { DRV(cuMemHostUnregister(a + i * kPiece)); });
    add(key("unregister").c_str(), bytes / s / 1e9);
    s = parallel(th, pieces, [&](std::size_t i) { std::memcpy(a + i * kPiece, src, kPiece); });
    add(key("memcpy_touched").c_str(), bytes / s / 1e9);
    munmap(a, bytes);
    a = fresh(bytes);
    s = parallel(th, pieces, [&](std::size_t i) {
      touch(a + i * kPiece, kPiece);
      DRV(cuMemHostRegister(a + i * kPiece, kPiece, 0));
    });
    add(key("touch_register").c_str(), bytes / s / 1e9);
    parallel(th, pieces, [&](std::size_t i) { DRV(cuMemHostUnregister(a + i * kPiece)); });
    munmap(a, bytes);
    a = fresh(bytes);
    s = parallel(th, pieces, [&](std::size_t i) { std::memcpy(a + i * kPiece, src, kPiece); });
    add(key("memcpy_fresh").c_str(), bytes / s / 1e9);
    s = now();
    munmap(a, bytes);
    add(key("munmap").c_str(), bytes / (now() - s) / 1e9);
  }
  munmap(src, kPiece);
}

// The virtual-memory calls of a discard wake (create, map, set access) and sleep (unmap,
// release) for `n` handles of `size` bytes spread over `threads` threads. (Creating on a second
// thread while the first maps is order_part's `helper`.)
void vmm_threads_part(std::size_t n, std::size_t size, int threads) {
  const CUmemAllocationProp prop = pinned_prop(CU_MEM_LOCATION_TYPE_DEVICE);
  const CUmemAccessDesc acc = read_write(CU_MEM_LOCATION_TYPE_DEVICE);
  CUdeviceptr base = 0;
  DRV(cuMemAddressReserve(&base, n * size, 0, 0, 0));
  std::vector<CUmemGenericAllocationHandle> h(n);
  std::string key = "vmm_mt." + std::to_string(size / MiB) + "m.t" + std::to_string(threads);
  const double wake_s = parallel(threads, n, [&](std::size_t i) {
    DRV(cuMemCreate(&h[i], size, &prop, 0));
    DRV(cuMemMap(base + i * size, size, 0, h[i], 0));
    DRV(cuMemSetAccess(base + i * size, size, &acc, 1));
  });
  DRV(cuMemsetD8(base, 1, n * size));
  DRV(cuCtxSynchronize());
  const double sleep_s = parallel(threads, n, [&](std::size_t i) {
    DRV(cuMemUnmap(base + i * size, size));
    DRV(cuMemRelease(h[i]));
  });
  add((key + ".wake_us").c_str(), wake_s / n * 1e6);
  add((key + ".sleep_us").c_str(), sleep_s / n * 1e6);
  DRV(cuMemAddressFree(base, n * size));
}

// The order of the driver's calls for `n` handles of `size` bytes: a wake as create, map, set
// access per handle in turn, or each call over `batch` handles before the next call (batch n: all
// creates, then all maps, then all set-access calls); a sleep as unmap and release per handle, or
// unmaps over `batch` handles, then their releases. `helper`: the creates (wake) or releases
// (sleep) run on a second thread, `batch` at a time, while the first does the rest.
void order_part(std::size_t n, std::size_t size, std::size_t batch, bool helper, int round) {
  const CUmemAllocationProp prop = pinned_prop(CU_MEM_LOCATION_TYPE_DEVICE);
  const CUmemAccessDesc acc = read_write(CU_MEM_LOCATION_TYPE_DEVICE);
  CUdeviceptr base = 0;
  DRV(cuMemAddressReserve(&base, n * size, 0, 0, 0));
  std::vector<CUmemGenericAllocationHandle> h(n);
  std::atomic<std::size_t> done{0};
  double t = now();
  std::thread creator;
  if (helper) {
    creator = std::thread([&] {
      cuCtxSetCurrent(ctx);
      for (std::size_t i = 0; i < n; ++i) {
        DRV(cuMemCreate(&h[i], size, &prop, 0));
        done.store(i + 1, std::memory_order_release);
      }
    });
  }
  for (std::size_t b = 0; b < n; b += batch) {
    const std::size_t e = std::min(n, b + batch);
    if (!helper) {
      for (std::size_t i = b; i < e; ++i)
        DRV(cuMemCreate(&h[i], size, &prop, 0));
    }
    for (std::size_t i = b; i < e; ++i) {
      if (helper) spin_until(done, i + 1);
      DRV(cuMemMap(base + i * size, size, 0, h[i], 0));
    }
    for (std::size_t i = b; i < e; ++i)
      DRV(cuMemSetAccess(base + i * size, size, &acc, 1));
  }
  if (helper) creator.join();
  const double wake_s = now() - t;
  DRV(cuMemsetD8(base, 1, n * size));
  DRV(cuCtxSynchronize());
  done.store(0);
  t = now();
  std::thread releaser;
  if (helper) {
    releaser = std::thread([&] {
      cuCtxSetCurrent(ctx);
      for (std::size_t i = 0; i < n; ++i) {
        spin_until(done, i + 1);
        DRV(cuMemRelease(h[i]));
      }
    });
  }
  for (std::size_t b = 0; b < n; b += batch) {
    const std::size_t e = std::min(n, b + batch);
    for (std::size_t i = b; i < e; ++i)
      DRV(cuMemUnmap(base + i * size, size));
    if (helper) {
      done.store(e, std::memory_order_release);
    } else {
      for (std::size_t i = b; i < e; ++i)
        DRV(cuMemRelease(h[i]));
    }
  }
  if (helper) releaser.join();
  const double sleep_s = now() - t;
  std::string key = "order." + std::to_string(size / MiB) + "m.b" + std::to_string(batch) +
                    (helper ? ".helper" : "") + ".r" + std::to_string(round);
  add((key + ".wake_us").c_str(), wake_s / n * 1e6);
  add((key + ".sleep_us").c_str(), sleep_s / n * 1e6);
  DRV(cuMemAddressFree(base, n * size));
}

// Variants of host-memory preparation on `threads` threads over `bytes`.
void pin_variants_part(std::size_t bytes, int threads) {
  auto key = [&](const std::string& w) {
    return "pin.t" + std::to_string(threads) + "." + w + "_gbps";
  };
  // Memory the guest has never used: hold blocks so that each takes new pages.
  std::vector<char*> held;
  for (int b = 0; b < 4; ++b) {
    char* a = fresh(bytes);
    double s =
        parallel(threads, bytes / kPiece, [&](std::size_t i) { touch(a + i * kPiece, kPiece); });
    add(key("touch_block" + std::to_string(b)).c_str(), bytes / s / 1e9);
    held.push_back(a);
  }
  for (char* a : held)
    munmap(a, bytes);
  for (std::size_t piece : {64 * MiB, 256 * MiB, 1024 * MiB}) {
    char* a = fresh(bytes);
    double s = parallel(threads, bytes / piece, [&](std::size_t i) {
      touch(a + i * piece, piece);
      DRV(cuMemHostRegister(a + i * piece, piece, 0));
    });
    add(key("touch_register_" + std::to_string(piece / MiB) + "m").c_str(), bytes / s / 1e9);
    parallel(threads, bytes / piece,
             [&](std::size_t i) { DRV(cuMemHostUnregister(a + i * piece)); });
    munmap(a, bytes);
  }
  {
    char* a = fresh(bytes);
    double s = parallel(threads, bytes / kPiece,
                        [&](std::size_t i) { DRV(cuMemHostRegister(a + i * kPiece, kPiece, 0)); });
    add(key("register_untouched").c_str(), bytes / s / 1e9);
    bool ok = true;
    for (std::size_t off = 0; off < bytes; off += 64 * MiB)
      ok = ok && a[off] == 0;
    add(key("register_untouched_reads_zero").c_str(), ok);
    parallel(threads, bytes / kPiece,
             [&](std::size_t i) { DRV(cuMemHostUnregister(a + i * kPiece)); });
    munmap(a, bytes);
  }
  {
    std::vector<char*> maps(bytes / kPiece);
    for (auto& m : maps)
      m = fresh(kPiece);
    double s = parallel(threads, maps.size(), [&](std::size_t i) {
      touch(maps[i], kPiece);
      DRV(cuMemHostRegister(maps[i], kPiece, 0));
    });
    add(key("touch_register_own_mapping").c_str(), bytes / s / 1e9);
    for (auto m : maps) {
      DRV(cuMemHostUnregister(m));
      munmap(m, kPiece);
    }
  }
}

// Host memory from the driver's virtual-memory calls (cuMemCreate on the host NUMA node).
void host_vmm_part(std::size_t bytes) {
  const CUmemAllocationProp prop = pinned_prop(CU_MEM_LOCATION_TYPE_HOST_NUMA);
  std::size_t gran = 0;
  CUresult r = cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED);
  add("host_vmm.supported", r == CUDA_SUCCESS);
  if (r != CUDA_SUCCESS) return;
  add("host_vmm.granularity_mib", double(gran) / MiB);
  CUdeviceptr base = 0;
  DRV(cuMemAddressReserve(&base, bytes, 0, 0, 0));
  const std::size_t pieces = bytes / kPiece;
  std::vector<CUmemGenericAllocationHandle> h(pieces);
  double t = now();
  for (std::size_t i = 0; i < pieces; ++i) {
    r = cuMemCreate(&h[i], kPiece, &prop, 0);
    if (r != CUDA_SUCCESS) {
      add("host_vmm.create_ok", 0);
      return;
    }
    DRV(cuMemMap(base + i * kPiece, kPiece, 0, h[i], 0));
  }
  const CUmemAccessDesc acc[2] = {read_write(CU_MEM_LOCATION_TYPE_DEVICE),
                                  read_write(CU_MEM_LOCATION_TYPE_HOST_NUMA)};
  r = cuMemSetAccess(base, bytes, acc, 2);
  add("host_vmm.host_access_ok", r == CUDA_SUCCESS);
  if (r != CUDA_SUCCESS) DRV(cuMemSetAccess(base, bytes, acc, 1));
  add("host_vmm.create_map_gbps", bytes / (now() - t) / 1e9);
  if (r == CUDA_SUCCESS) {
    t = now();
    parallel(8, pieces, [&](std::size_t i) {
      std::memset(reinterpret_cast<char*>(base) + i * kPiece, 1, kPiece);
    });
    add("host_vmm.cpu_memset_t8_gbps", bytes / (now() - t) / 1e9);
  }
  CUdeviceptr d = 0;
  DRV(cuMemAlloc(&d, kPiece * 4));
  CUstream s;
  DRV(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
  t = now();
  for (std::size_t i = 0; i < pieces; ++i)
    DRV(cuMemcpyAsync(base + i * kPiece, d + (i % 4) * kPiece, kPiece, s));
  DRV(cuStreamSynchronize(s));
  add("host_vmm.d2h_gbps", bytes / (now() - t) / 1e9);
  DRV(cuMemUnmap(base, bytes));
  t = now();
  for (auto x : h)
    DRV(cuMemRelease(x));
  add("host_vmm.release_gbps", bytes / (now() - t) / 1e9);
  DRV(cuMemAddressFree(base, bytes));
  DRV(cuMemFree(d));
  DRV(cuStreamDestroy(s));
}

// Device to host through `slots` pinned slots of `slot` bytes into fresh (or touched) memory,
// `threads` CPU threads copying out of the slots; then host to device the same way.
void staged_part(std::size_t bytes, int threads, int slots, std::size_t slot, bool fresh_dst,
                 double d2h_line) {
  CUdeviceptr d = 0;
  DRV(cuMemAlloc(&d, bytes));
  DRV(cuMemsetD32(d, 0x5a5a5a5a, bytes / 4));
  std::vector<char*> ring(slots);
  for (auto& p : ring) {
    p = fresh(slot);
    touch(p, slot);
    DRV(cuMemHostRegister(p, slot, 0));
  }
  std::vector<CUstream> streams(slots);
  std::vector<CUevent> events(slots);
  for (int i = 0; i < slots; ++i) {
    DRV(cuStreamCreate(&streams[i], CU_STREAM_NON_BLOCKING));
    DRV(cuEventCreate(&events[i], CU_EVENT_DISABLE_TIMING));
  }
  char* dst = fresh(bytes);
  if (!fresh_dst) touch(dst, bytes);
  const std::size_t chunks = bytes / slot;
  const int parts = 8;
  std::string key = "staged.t" + std::to_string(threads) + ".s" + std::to_string(slots) + "x" +
                    std::to_string(slot / MiB) + (fresh_dst ? ".fresh" : ".touched");
  for (int dir = 0; dir < 2; ++dir) {
    const bool to_host = dir == 0;
    // to_host: the GPU fills slot k % slots with chunk k, CPU threads copy it out to dst.
    // to device: CPU threads fill the slot from dst, then the GPU copies it in.
    std::atomic<std::size_t> issued{0};    // chunks whose GPU copy is queued
    std::atomic<std::size_t> gpu_done{0};  // chunks whose GPU copy completed (in order)
    std::atomic<std::size_t> cpu_done{0};  // chunks whose CPU copies completed (in order)
    std::vector<std::atomic<int>> parts_left(chunks);
    for (auto& p : parts_left)
      p = parts;
    std::atomic<std::size_t> next_job{0};
    double t = now();
    std::thread issuer([&] {
      cuCtxSetCurrent(ctx);
      for (std::size_t k = 0; k < chunks; ++k) {
        int s = k % slots;
        if (to_host) {
          if (k >= static_cast<std::size_t>(slots)) spin_until(cpu_done, k - slots + 1);
          DRV(cuMemcpyDtoHAsync(ring[s], d + k * slot, slot, streams[s]));
        } else {
          spin_until(cpu_done, k + 1);
          DRV(cuMemcpyHtoDAsync(d + k * slot, ring[s], slot, streams[s]));
        }
        DRV(cuEventRecord(events[s], streams[s]));
        issued.store(k + 1);
      }
    });
    std::thread waiter([&] {
      cuCtxSetCurrent(ctx);
      for (std::size_t k = 0; k < chunks; ++k) {
        spin_until(issued, k + 1);
        DRV(cuEventSynchronize(events[k % slots]));
        gpu_done.store(k + 1);
      }
    });
    std::vector<std::thread> cpu;
    for (int w = 0; w < threads; ++w) {
      cpu.emplace_back([&] {
        for (;;) {
          std::size_t j = next_job++;
          if (j >= chunks * parts) return;
          std::size_t k = j / parts, part = j % parts;
          if (to_host) {
            spin_until(gpu_done, k + 1);
          } else if (k >= static_cast<std::size_t>(slots)) {
            spin_until(gpu_done, k - slots + 1);  // the slot's previous chunk is on the GPU
          }
          std::size_t n = slot / parts;
          char* host = dst + k * slot + part * n;
          char* st = ring[k % slots] + part * n;
          if (to_host)
            std::memcpy(host, st, n);
          else
            std::memcpy(st, host, n);
          if (--parts_left[k] == 0) {
            spin_until(cpu_done, k);
            cpu_done.store(k + 1);
          }
        }
      });
    }
    issuer.join();
    waiter.join();
    for (auto& c : cpu)
      c.join();
    DRV(cuCtxSynchronize());
    double s = now() - t;
    std::string k2 = key + (to_host ? ".d2h" : ".h2d");
    add((k2 + "_gbps").c_str(), bytes / s / 1e9);
    add((k2 + "_vs_line").c_str(), bytes / s / 1e9 / d2h_line);
    if (to_host) {
      bool ok = true;
      for (std::size_t off = 0; off < bytes; off += 4096 * 7)
        ok = ok && dst[off] == 0x5a;
      add((key + ".ok").c_str(), ok);
      std::memset(dst, 0x11, 4096);  // shows on the way back
    } else {
      unsigned int v = 0;
      DRV(cuMemcpyDtoH(&v, d, 4));
      add((key + ".back_ok").c_str(), v == 0x11111111u);
    }
  }
  munmap(dst, bytes);
  for (int i = 0; i < slots; ++i) {
    DRV(cuMemHostUnregister(ring[i]));
    DRV(cuStreamDestroy(streams[i]));
    DRV(cuEventDestroy(events[i]));
  }
  DRV(cuMemFree(d));
}

// A first sleep into unprepared host memory, end to end: the pieces of a fresh huge-page mapping
// are prepared on CPU threads while the main thread copies each 256 MiB piece to it as soon as it
// is registered (4 streams, 64 MiB chunks). Arrangements:
//   each     `touchers` threads each touch and register whole pieces (as the mirrors do)
//   help     the same, and the copying thread prepares the piece it needs next itself when no
//            thread has taken it yet
//   split    `touchers` threads touch, `registrars` threads register the touched pieces
// `warm`: the memory was backed (touched and returned) just before, as for a process whose host
// has used that memory before.
void first_part(std::size_t bytes, int touchers, int registrars, bool help, bool warm,
                double d2h_line) {
  CUdeviceptr d = 0;
  DRV(cuMemAlloc(&d, bytes));
  DRV(cuMemsetD32(d, 0x6b6b6b6b, bytes / 4));
  CUstream s[4];
  for (auto& x : s)
    DRV(cuStreamCreate(&x, CU_STREAM_NON_BLOCKING));
  if (warm) {
    char* w = fresh(bytes);
    parallel(16, bytes / kPiece, [&](std::size_t i) { touch(w + i * kPiece, kPiece); });
    munmap(w, bytes);
  }
  char* h = fresh(bytes);
  const std::size_t pieces = bytes / kPiece;
  std::vector<std::atomic<int>> state(pieces);  // 0 untouched, 1 touched, 2 registered
  std::vector<std::atomic<bool>> taken(pieces);
  for (std::size_t i = 0; i < pieces; ++i) {
    state[i] = 0;
    taken[i] = false;
  }
  auto take = [&](std::size_t i) { return !taken[i].exchange(true); };
  auto prepare = [&](std::size_t i, bool and_register) {
    touch(h + i * kPiece, kPiece);
    if (and_register) DRV(cuMemHostRegister(h + i * kPiece, kPiece, 0));
    state[i].store(and_register ? 2 : 1, std::memory_order_release);
  };
  std::atomic<std::size_t> next_register{0};
  double t = now();
  std::vector<std::thread> ts;
  for (int k = 0; k < touchers; ++k) {
    ts.emplace_back([&] {
      cuCtxSetCurrent(ctx);
      for (std::size_t i = 0; i < pieces; ++i) {
        if (take(i)) prepare(i, registrars == 0);
      }
    });
  }
  for (int k = 0; k < registrars; ++k) {
    ts.emplace_back([&] {
      cuCtxSetCurrent(ctx);
      for (std::size_t i; (i = next_register++) < pieces;) {
        spin_until(state[i], 1);
        DRV(cuMemHostRegister(h + i * kPiece, kPiece, 0));
        state[i].store(2, std::memory_order_release);
      }
    });
  }
  for (std::size_t i = 0, c = 0; i < pieces; ++i) {
    if (help && take(i)) prepare(i, true);
    spin_until(state[i], 2);
    for (std::size_t off = 0; off < kPiece; off += 64 * MiB, ++c)
      DRV(cuMemcpyDtoHAsync(h + i * kPiece + off, d + i * kPiece + off, 64 * MiB, s[c % 4]));
  }
  DRV(cuCtxSynchronize());
  double secs = now() - t;
  for (auto& th : ts)
    th.join();
  bool ok = true;
  for (std::size_t off = 0; off < bytes; off += 4096)
    ok = ok && *reinterpret_cast<const std::uint32_t*>(h + off) == 0x6b6b6b6bu;
  std::string key =
      std::string("first.") + (warm ? "warm." : "cold.") +
      (registrars > 0 ? "split.t" + std::to_string(touchers) + "r" + std::to_string(registrars)
                      : (help ? "help.t" : "each.t") + std::to_string(touchers));
  add((key + ".d2h_vs_line").c_str(), bytes / secs / 1e9 / d2h_line);
  add((key + ".ok").c_str(), ok);
  for (std::size_t i = 0; i < pieces; ++i)
    DRV(cuMemHostUnregister(h + i * kPiece));
  munmap(h, bytes);
  for (auto& x : s)
    DRV(cuStreamDestroy(x));
  DRV(cuMemFree(d));
}

double line_d2h(std::size_t bytes) {
  CUdeviceptr d = 0;
  DRV(cuMemAlloc(&d, bytes));
  char* h = fresh(bytes);
  touch(h, bytes);
  DRV(cuMemHostRegister(h, bytes, 0));
  CUstream s[4];
  for (auto& x : s)
    DRV(cuStreamCreate(&x, CU_STREAM_NON_BLOCKING));
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    double t = now();
    for (std::size_t off = 0, i = 0; off < bytes; off += 64 * MiB, ++i)
      DRV(cuMemcpyDtoHAsync(h + off, d + off, 64 * MiB, s[i % 4]));
    DRV(cuCtxSynchronize());
    best = std::max(best, bytes / (now() - t) / 1e9);
  }
  DRV(cuMemHostUnregister(h));
  munmap(h, bytes);
  DRV(cuMemFree(d));
  for (auto& x : s)
    DRV(cuStreamDestroy(x));
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  double gib = 8;
  std::string parts = "vmm,vmt,order,pin,host,staged,first";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--gib")) gib = std::atof(argv[i + 1]);
    if (!std::strcmp(argv[i], "--parts")) parts = argv[i + 1];
  }
  const std::size_t bytes = static_cast<std::size_t>(gib * GiB) / kPiece * kPiece;
  DRV(cuInit(0));
  DRV(cuDeviceGet(&dev, 0));
  DRV(cuDevicePrimaryCtxRetain(&ctx, dev));
  DRV(cuCtxSetCurrent(ctx));
  if (parts.find("vmm") != std::string::npos) {
    vmm_part(1000, 2 * MiB, "vmm2m");
    vmm_part(1000, 8 * MiB, "vmm8m");
    for (std::size_t mib : {2, 64, 1024})
      alloc_part(mib * MiB, 40);
  }
  if (parts.find("vmt") != std::string::npos) {
    for (int t : {1, 2, 4})
      vmm_threads_part(1000, 2 * MiB, t);
  }
  if (parts.find("order") != std::string::npos) {
    for (int round = 0; round < 2; ++round) {
      for (std::size_t mib : {2, 8}) {
        for (std::size_t batch :
             {std::size_t{1}, std::size_t{16}, std::size_t{64}, std::size_t{1000}})
          order_part(1000, mib * MiB, batch, false, round);
        for (std::size_t batch : {std::size_t{1}, std::size_t{16}, std::size_t{64}})
          order_part(1000, mib * MiB, batch, true, round);
      }
    }
  }
  if (parts.find("pin") != std::string::npos) {
    pin_variants_part(bytes, 16);
    pin_variants_part(bytes, 8);
  }
  if (parts.find("host") != std::string::npos) {
    host_part(bytes, {4, 8, 16});
    host_vmm_part(std::min<std::size_t>(bytes, 4 * GiB));
  }
  if (parts.find("first") != std::string::npos) {
    double line = line_d2h(4 * GiB);
    add("first.line_d2h_gbps", line);
    for (int round = 0; round < 2; ++round) {
      first_part(bytes, 8, 0, false, true, line);
      first_part(bytes, 8, 0, true, true, line);
      first_part(bytes, 4, 0, false, true, line);
      first_part(bytes, 12, 0, false, true, line);
    }
    first_part(bytes, 14, 1, false, true, line);
    first_part(bytes, 8, 0, false, false, line);
  }
  if (parts.find("staged") != std::string::npos) {
    double line = line_d2h(4 * GiB);
    add("line.d2h_gbps", line);
    staged_part(bytes, 8, 4, 64 * MiB, true, line);
    staged_part(bytes, 12, 4, 64 * MiB, true, line);
    staged_part(bytes, 12, 8, 32 * MiB, true, line);
    staged_part(bytes, 12, 4, 64 * MiB, false, line);
  }
  std::printf("RESULT {%s}\n", json.c_str());
  return 0;
}

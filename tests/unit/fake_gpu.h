// Test fixture: the production CudaDriver loaded over the emulated driver library, plus the
// emulated driver's test controls (faults, capacity, counters).
#pragma once

#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "driver/cuda_driver.h"
#include "core/engine.h"
#include "fakecuda.h"

namespace gpusleep::test {

inline constexpr std::size_t kMiB = std::size_t{1} << 20;
inline constexpr std::size_t kGiB = std::size_t{1} << 30;
inline constexpr std::uint64_t kDefaultCapacity = std::uint64_t{4} << 30;
inline constexpr int kErrorUnknown = 999;  // CUDA_ERROR_UNKNOWN

class FakeGpu {
 public:
  FakeGpu() {
    std::string error;
    driver_ = CudaDriver::load(FAKECUDA_LIBRARY, &error);
    if (!driver_) throw std::runtime_error(error);
    lib_ = dlopen(FAKECUDA_LIBRARY, RTLD_NOW | RTLD_NOLOAD);
    resolve(reset_, "fakecuda_reset");
    resolve(stats_, "fakecuda_get_stats");
    resolve(fail_, "fakecuda_fail");
    resolve(used_, "fakecuda_used_bytes");
    resolve(capacity_, "fakecuda_capacity_bytes");
    resolve(set_capacity_, "fakecuda_set_capacity");
    resolve(set_vmm_, "fakecuda_set_vmm");
    resolve(set_delay_, "fakecuda_set_copy_delay_us");
    resolve(begin_capture_, "fakecuda_begin_capture");
    resolve(end_capture_, "fakecuda_end_capture");
    reset_();
    set_capacity_(0, kDefaultCapacity);
    set_vmm_(1);
  }
  ~FakeGpu() {
    reset_();
    set_capacity_(0, kDefaultCapacity);
    set_vmm_(1);
  }

  Driver& driver() { return *driver_; }
  FakeCudaStats stats() {
    FakeCudaStats s{};
    stats_(&s);
    return s;
  }
  void fail(const char* fn, int skip, int count, int error = kErrorUnknown) {
    fail_(fn, skip, count, error);
  }
  std::uint64_t used(int device = 0) { return used_(device); }
  std::uint64_t capacity(int device = 0) { return capacity_(device); }
  void set_capacity(std::uint64_t bytes, int device = 0) { set_capacity_(device, bytes); }
  void set_vmm(bool on) { set_vmm_(on ? 1 : 0); }
  void set_copy_delay_us(unsigned us) { set_delay_(us); }
  // An emulated global-mode stream capture by the host; end_capture() says if it stayed valid.
  void begin_capture() { begin_capture_(1); }
  bool end_capture() { return end_capture_() == 1; }

 private:
  template <typename F>
  void resolve(F*& fn, const char* name) {
    fn = reinterpret_cast<F*>(dlsym(lib_, name));
    if (fn == nullptr) throw std::runtime_error(std::string("fake driver lacks ") + name);
  }

  std::unique_ptr<CudaDriver> driver_;
  void* lib_ = nullptr;
  decltype(fakecuda_reset)* reset_ = nullptr;
  decltype(fakecuda_get_stats)* stats_ = nullptr;
  decltype(fakecuda_fail)* fail_ = nullptr;
  decltype(fakecuda_used_bytes)* used_ = nullptr;
  decltype(fakecuda_capacity_bytes)* capacity_ = nullptr;
  decltype(fakecuda_set_capacity)* set_capacity_ = nullptr;
  decltype(fakecuda_set_vmm)* set_vmm_ = nullptr;
  decltype(fakecuda_set_copy_delay_us)* set_delay_ = nullptr;
  decltype(fakecuda_begin_capture)* begin_capture_ = nullptr;
  decltype(fakecuda_end_capture)* end_capture_ = nullptr;
};

// Options for engines under test: small chunks so that copies are split, few helper threads.
inline Options test_options() {
  Options o;
  o.copy_chunk = 2 * kMiB;
  o.copy_streams = 3;
  o.prep_threads = 2;
  o.log_level = LogLevel::kOff;
  return o;
}

inline std::uint64_t pattern(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t z = seed + i * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The emulated device memory is host memory: tests fill and check it directly while awake.
inline void fill(DevicePtr va, std::size_t bytes, std::uint64_t seed) {
  auto* w = reinterpret_cast<std::uint64_t*>(va);
  for (std::size_t i = 0; i < bytes / 8; ++i)
    w[i] = pattern(seed, i);
}

inline bool holds(DevicePtr va, std::size_t bytes, std::uint64_t seed) {
  auto* w = reinterpret_cast<const std::uint64_t*>(va);
  for (std::size_t i = 0; i < bytes / 8; ++i) {
    if (w[i] != pattern(seed, i)) return false;
  }
  return true;
}

inline bool all_zero(DevicePtr va, std::size_t bytes) {
  auto* w = reinterpret_cast<const std::uint64_t*>(va);
  for (std::size_t i = 0; i < bytes / 8; ++i) {
    if (w[i] != 0) return false;
  }
  return true;
}

// Allocates through the engine on device 0 and checks it became a region.
inline DevicePtr must_allocate(Engine& engine, std::size_t bytes) {
  DevicePtr va = 0;
  if (engine.allocate(bytes, 0, 0, &va) != AllocOutcome::kManaged) {
    throw std::runtime_error("allocation did not become a region");
  }
  return va;
}

inline const TagStatus* find_tag(const EngineStatus& s, const std::string& tag) {
  for (const TagStatus& t : s.tags) {
    if (t.tag == tag) return &t;
  }
  return nullptr;
}

}  // namespace gpusleep::test

// Which driver entry points the library substitutes, and how a lookup picks one. A lookup names a
// function either by its ABI symbol (dlsym: "cuMemAlloc_v2") or by its API name with the CUDA
// version and stream flags the caller was built for (cuGetProcAddress: "cuMemAlloc", 12000, 0).
// Each table slot is one ABI; a lookup that resolves to an ABI the table lacks (an older version,
// an unknown name, cuGetExportTable) is never substituted.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace gpusleep {

enum class StreamVariant {
  kAny,        // the function takes no stream: the flags do not matter
  kLegacy,     // the legacy-default-stream variant of a stream function
  kPerThread,  // its per-thread-default-stream variant ("_ptsz")
};

struct EntryPoint {
  const char* abi;  // the exported symbol of this ABI
  const char* api;  // the name cuGetProcAddress is asked for
  int since;        // the first CUDA version (1000 * major + 10 * minor) with this ABI
  int until;        // the last one (kNoLimit: still current)
  StreamVariant variant;
};

inline constexpr int kNoLimit = 1 << 30;
// cuGetProcAddress's flag for per-thread default stream variants (CUDA's value).
inline constexpr std::uint64_t kPerThreadStreamFlag = 2;

class EntryPointTable {
 public:
  EntryPointTable(const EntryPoint* entries, std::size_t count);

  std::size_t size() const { return count_; }
  const EntryPoint& entry(std::size_t slot) const { return entries_[slot]; }

  // The slot of the ABI symbol `name`, or -1.
  int by_abi(const char* name) const;
  // The slot that cuGetProcAddress(api, version, flags) resolves to, or -1.
  int by_request(const char* api, int version, std::uint64_t flags) const;

  // Records `real` as the driver's function for `slot`. True when it is the slot's function: the
  // first one recorded, or the same again. A different pointer for the same slot is refused, so
  // a wrapper never calls a function other than the one it stands for.
  bool learn(std::size_t slot, void* real);
  // The recorded function of `slot` (null: none yet).
  void* real(std::size_t slot) const;

 private:
  const EntryPoint* entries_;
  std::size_t count_;
  std::unique_ptr<std::atomic<void*>[]> reals_;
};

}  // namespace gpusleep

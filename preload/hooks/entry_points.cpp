#include "hooks/entry_points.h"

#include <cstring>

namespace gpusleep {

EntryPointTable::EntryPointTable(const EntryPoint* entries, std::size_t count)
    : entries_(entries), count_(count), reals_(new std::atomic<void*>[count]) {
  for (std::size_t i = 0; i < count; ++i)
    reals_[i].store(nullptr);
}

int EntryPointTable::by_abi(const char* name) const {
  if (name == nullptr) return -1;
  for (std::size_t i = 0; i < count_; ++i) {
    if (std::strcmp(entries_[i].abi, name) == 0) return static_cast<int>(i);
  }
  return -1;
}

int EntryPointTable::by_request(const char* api, int version, std::uint64_t flags) const {
  if (api == nullptr) return -1;
  const bool per_thread = (flags & kPerThreadStreamFlag) != 0;
  for (std::size_t i = 0; i < count_; ++i) {
    const EntryPoint& e = entries_[i];
    if (std::strcmp(e.api, api) != 0 || version < e.since || version > e.until) continue;
    if (e.variant == StreamVariant::kLegacy && per_thread) continue;
    if (e.variant == StreamVariant::kPerThread && !per_thread) continue;
    return static_cast<int>(i);
  }
  return -1;
}

bool EntryPointTable::learn(std::size_t slot, void* real) {
  if (slot >= count_ || real == nullptr) return false;
  void* expected = nullptr;
  if (reals_[slot].compare_exchange_strong(expected, real)) return true;
  return expected == real;
}

void* EntryPointTable::real(std::size_t slot) const {
  return slot < count_ ? reals_[slot].load(std::memory_order_acquire) : nullptr;
}

}  // namespace gpusleep

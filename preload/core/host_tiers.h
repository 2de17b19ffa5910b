// Where offloaded contents go: a region's pinned mirror while the host budget has room, past it
// pageable host memory while the host has room, then a spill file on disk. Sleep plans each
// region's tier before it touches anything (so a sleep that cannot be stored fails whole), and
// moves the pageable and disk tiers through one staging ring.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/host_budget.h"
#include "core/options.h"
#include "core/spill.h"
#include "core/staging.h"
#include "driver/driver.h"

namespace gpusleep {

// An asleep region's contents past its pinned mirror. Gives its memory or disk blocks back, and
// its bytes to the budget's books, when destroyed.
class Stash {
 public:
  enum class Tier { kPageable, kDisk };

  // `bytes` of pageable host memory; null when it cannot be mapped.
  static std::unique_ptr<Stash> pageable(std::size_t bytes, HostBudget* budget);
  // `bytes` at `offset` of a spill file (shared by the regions of one sleep).
  static std::unique_ptr<Stash> disk(std::shared_ptr<SpillFile> file, std::size_t offset,
                                     std::size_t bytes, HostBudget* budget);
  ~Stash();
  Stash(const Stash&) = delete;
  Stash& operator=(const Stash&) = delete;

  Tier tier() const { return tier_; }
  std::size_t bytes() const { return bytes_; }
  // Moves one chunk of a staging job between a staging buffer and the stash.
  bool put(std::size_t offset, const char* data, std::size_t n, std::string* error);
  bool get(std::size_t offset, char* data, std::size_t n, std::string* error);

 private:
  Stash(Tier tier, std::size_t bytes, HostBudget* budget)
      : tier_(tier), bytes_(bytes), budget_(budget) {}

  const Tier tier_;
  const std::size_t bytes_;
  HostBudget* const budget_;
  char* host_ = nullptr;             // kPageable
  std::shared_ptr<SpillFile> file_;  // kDisk
  std::size_t offset_ = 0;
};

// Thread-safe, except the staging ring (one sleep or wake at a time uses it).
class HostTiers {
 public:
  // Host memory the pageable tier leaves to the host, and to the cgroup.
  static constexpr std::size_t kPageableReserve = std::size_t{4} << 30;

  // Sets up the budget from `options` (host_budget, host_budget_ledger) and checks the spill
  // directory (a refused one is logged and left unused).
  HostTiers(Driver& driver, const Options& options);

  HostBudget& budget() { return budget_; }
  // The spill directory in use ("": none), and why a configured one is not used.
  const std::string& spill_dir() const { return spill_dir_; }
  const std::string& spill_problem() const { return spill_problem_; }
  bool pageable_enabled() const { return pageable_; }
  // Whether `bytes` more of pageable memory leave the host its reserve, beside `planned` bytes
  // already promised in the same sleep.
  bool pageable_room(std::size_t bytes, std::size_t planned) const;
  StagingRing& staging() { return staging_; }

 private:
  HostBudget budget_;
  const bool pageable_;
  std::string spill_dir_;
  std::string spill_problem_;
  StagingRing staging_;
};

}  // namespace gpusleep

// The node's host-memory budget for pinned mirrors: one ledger file shared by every gpusleep
// process of the user, with one entry per process, updated under flock. Entries of processes that
// died are dropped on the next update (pid and start time both checked), so their bytes return.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>

namespace gpusleep {

// GPUSLEEP_HOST_BUDGET: a size ("64G", "0") or a percentage of the host memory available at start
// ("25%", "100%").
struct BudgetSetting {
  bool set = false;      // false: the default (half of what is available at start)
  bool percent = false;  // true: `fraction` of what is available at start
  double fraction = 0.5;
  std::size_t bytes = 0;
};
// Returns false on anything but a size or a percentage from 0 to 100.
bool parse_budget(std::string_view text, BudgetSetting* out);

struct CgroupMemory {
  bool limited = false;  // false: no limit found (none set, or no memory controller)
  std::size_t limit = 0;
  std::size_t usage = 0;
};
// The memory limit and usage of the calling process's cgroup: cgroup v2 (memory.max and
// memory.current), else v1 (memory.limit_in_bytes and memory.usage_in_bytes). `root` is where
// the hierarchy is mounted and `self_cgroup` the process's /proc/PID/cgroup (tests pass others).
CgroupMemory read_cgroup_memory(const std::string& root = "/sys/fs/cgroup",
                                const std::string& self_cgroup = "/proc/self/cgroup");

// Host memory this process may still use: MemAvailable, less where the cgroup allows less.
std::size_t host_headroom_bytes();

// What a setting means given `headroom` (host_headroom_bytes() at start).
std::size_t resolve_budget(const BudgetSetting& setting, std::size_t headroom);

// The start time of `pid` (field 22 of /proc/PID/stat, clock ticks since boot); false when the
// process does not exist. With the pid it names one process for good: pids are reused, start
// times with them are not.
bool process_start_time(pid_t pid, unsigned long long* start);

// Bytes held by one process, as the ledger records them.
struct HostHeld {
  std::size_t pinned = 0;    // within the budget
  std::size_t pageable = 0;  // past it, in host memory
  std::size_t spilled = 0;   // past it, on disk
};

struct BudgetUsage {
  std::size_t limit = 0;  // the node-wide budget of pinned bytes
  HostHeld here;          // this process
  HostHeld node;          // every live process in the ledger, this one included
  int processes = 0;      // live processes in the ledger
  bool shared = false;    // false: the ledger could not be used; the budget is this process's own
};

// Thread-safe. Lock order: its own mutex, then the file lock; neither is held across other work.
class HostBudget {
 public:
  // `ledger`: the ledger file (created with mode 0600 in a private directory; empty: none, the
  // budget is this process's alone). `limit`: the budget this process would set. `explicit_limit`:
  // the user set it, so it replaces the ledger's; otherwise the ledger's limit stands while any
  // process in it lives.
  HostBudget(std::string ledger, std::size_t limit, bool explicit_limit);
  // Removes this process's entry.
  ~HostBudget();
  HostBudget(const HostBudget&) = delete;
  HostBudget& operator=(const HostBudget&) = delete;

  // Adds `bytes` to this process's pinned bytes when the node-wide total stays within the budget
  // and the process's cgroup keeps `cgroup_reserve` bytes of headroom; returns false and changes
  // nothing otherwise.
  bool reserve_pinned(std::size_t bytes);
  void release_pinned(std::size_t bytes);
  // Bytes held past the budget (status only): deltas, never below zero.
  void add_pageable(long long delta);
  void add_spilled(long long delta);

  // Reads the ledger (dropping dead entries).
  BudgetUsage usage();
  std::size_t limit() const;

  // The cgroup headroom reserve_pinned() keeps.
  static constexpr std::size_t kCgroupReserve = std::size_t{1} << 30;

 private:
  struct Entry {
    pid_t pid = 0;
    unsigned long long start = 0;
    HostHeld held;
  };
  // Caller holds mu_. Locks the file, reads it, drops dead entries, lets `change` edit this
  // process's entry (it returns false to leave the file as it was), writes it back. Returns
  // false when `change` refused or the file is unusable (then `change` ran on the local entry).
  template <typename Fn>
  bool update_locked(Fn change, BudgetUsage* usage);
  bool open_locked();

  const std::string path_;
  std::size_t limit_;
  const bool explicit_limit_;
  mutable std::mutex mu_;
  int fd_ = -1;
  bool broken_ = false;  // the ledger could not be used: local accounting only
  HostHeld here_;
};

}  // namespace gpusleep

// What the engine's parts share: the driver, the options, the region table and the books kept
// beside it (devices, tags, memory the library did not make, peers). Each part (allocation.h,
// sleep and wake in operation.h, adoption.h, peers.h, engine_status.h) works on one EngineParts,
// which the Engine facade owns; nothing outside the core sees it.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/copier.h"
#include "core/engine_types.h"
#include "core/gate.h"
#include "core/host_tiers.h"
#include "core/mirror.h"
#include "core/options.h"
#include "core/peers.h"
#include "core/policy.h"
#include "core/region.h"
#include "core/tagger.h"
#include "driver/driver.h"

namespace gpusleep {

// Host bytes a mirror of a region of `region_size` bytes holds: the bytes the caller asked for,
// in whole host pages, not the granularity's rounding (nothing may be read past the size).
std::size_t mirror_size(std::size_t region_size);
std::size_t round_up(std::size_t n, std::size_t to);

// Runs `fn` on scope exit.
template <typename Fn>
class OnExit {
 public:
  explicit OnExit(Fn fn) : fn_(std::move(fn)) {}
  ~OnExit() { fn_(); }
  OnExit(const OnExit&) = delete;
  OnExit& operator=(const OnExit&) = delete;

 private:
  Fn fn_;
};

// Restores the calling thread's context on scope exit (frees run on the host's threads).
class ContextRestorer {
 public:
  explicit ContextRestorer(Driver& driver);
  ~ContextRestorer();
  ContextRestorer(const ContextRestorer&) = delete;
  ContextRestorer& operator=(const ContextRestorer&) = delete;

 private:
  Driver& driver_;
  Context saved_ = nullptr;
  bool ok_ = false;
};

// What each device offers the engine, asked of the driver once per device. Thread-safe.
class DeviceCatalog {
 public:
  struct Info {
    bool checked = false;
    bool vmm = false;  // virtual memory management: false means allocations pass through
    std::size_t granularity = 0;
  };
  explicit DeviceCatalog(Driver& driver) : driver_(driver) {}
  // False for a device number out of range; else fills *info (a device without virtual memory
  // management is logged the first time).
  bool info(int device, Info* info);
  // The devices with virtual memory management asked about so far.
  std::set<int> used() const;

 private:
  static constexpr int kMaxDevices = 64;
  Driver& driver_;
  mutable std::mutex mu_;
  std::array<Info, kMaxDevices> devices_{};
  std::set<int> used_;
};

// The tags the engine knows (the default tag, every tag a region, rule or phase ever had) and
// when each last slept and woke. Thread-safe.
class TagBook {
 public:
  struct Times {
    std::optional<double> last_sleep_ms;
    std::optional<double> last_wake_ms;
  };
  void add(const std::string& tag);
  // The tags a request names: every known tag when `requested` is empty. False, with the failure
  // in *result, when one is not a tag name or not known.
  bool resolve(const std::vector<std::string>& requested, std::set<std::string>* tags,
               OpResult* result) const;
  // Records how long the operation that changed `tags` took.
  void record_sleep(const std::vector<TagReport>& tags, double ms);
  void record_wake(const std::vector<TagReport>& tags, double ms);
  // Every known tag with its times.
  std::map<std::string, Times> known() const;
  // Whether `tag` has been put to sleep before (its regions are likely to sleep again).
  bool has_slept(const std::string& tag) const;

 private:
  mutable std::mutex mu_;
  std::set<std::string> known_;
  std::map<std::string, Times> times_;
};

// Device memory of the process the engine did not make, by kind, for status. Thread-safe.
class ForeignLedger {
 public:
  struct Totals {
    std::size_t allocations = 0;
    std::size_t bytes = 0;
  };
  // Notes (or re-notes with a new size) the allocation `key`.
  void note(ForeignKind kind, std::uint64_t key, std::size_t bytes);
  // True when `key` was noted (and is now forgotten).
  bool forget(ForeignKind kind, std::uint64_t key);
  Totals totals(ForeignKind kind) const;

 private:
  struct Kind {
    std::unordered_map<std::uint64_t, std::size_t> entries;
    std::size_t bytes = 0;
  };
  mutable std::mutex mu_;
  std::array<Kind, kForeignKinds> kinds_;
};

// The sleep or wake in flight, for status to read while it runs: status takes no operation lock,
// and this one is held only to copy a few fields. Written by the operation's threads.
class OperationProgress {
 public:
  void begin(const char* op, std::vector<std::string> tags, std::size_t regions,
             std::size_t total_bytes);
  void add(std::size_t bytes) { done_.fetch_add(bytes, std::memory_order_relaxed); }
  void set_waiting(bool waiting) { waiting_.store(waiting, std::memory_order_relaxed); }
  void end();
  std::optional<OperationStatus> snapshot() const;

 private:
  mutable std::mutex mu_;
  std::optional<OperationStatus> now_;  // op, tags, regions and total; nullopt between operations
  double started_ = 0;
  std::atomic<std::size_t> done_{0};
  std::atomic<bool> waiting_{false};
};

struct EngineParts {
  // `gate` (optional) is closed while any region is asleep (gate.h).
  EngineParts(Driver& driver, const Options& options, Gate* gate);

  // Opens the gate when no region is asleep or moving (atomically with claims, so a sleep that
  // has claimed regions keeps it closed).
  void open_gate_if_all_awake();
  // Control operations run on the library's threads: free them from the host's capture rules.
  void relax_this_thread();

  Driver& driver;
  const Options options;
  Gate* const gate;
  Tagger tagger;
  PolicyTable policies;
  HostTiers tiers;  // before the regions and the preparer: their mirrors count in its budget
  RegionTable table;
  MirrorPreparer preparer;
  std::atomic<std::uint64_t> next_id{1};  // the next region id
  DeviceCatalog devices;
  // One sleep, wake, retag or peer change at a time; never taken by allocation or free. Lock
  // order: op_mu, then the peer set's lock.
  std::mutex op_mu;
  Copier copier;  // guarded by op_mu
  OperationProgress progress;
  TagBook tags;
  ForeignLedger foreign;
  PeerSet peers;
};

}  // namespace gpusleep

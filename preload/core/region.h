// Regions: the device allocations the library backs with reserved address ranges, and the table
// that finds them by address and moves them between states.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/host_tiers.h"
#include "core/mirror.h"
#include "core/policy.h"
#include "core/site_context.h"
#include "driver/driver.h"

namespace gpusleep {

enum class RegionState {
  kAwake,     // physical memory mapped, contents live
  kAsleep,    // physical memory released; contents in the mirror (offload) or gone (discard)
  kSleeping,  // being put to sleep by a control request
  kWaking,    // being woken by a control request
};
const char* region_state_name(RegionState state);

// Physical memory the program created and mapped itself (cuMemCreate, cuMemMap), adopted so it can
// sleep. The program keeps its handle value (`key`) and its address range; the library recreates
// the memory like it was on wake.
struct AdoptedHandle {
  std::uint64_t key = 0;                    // the handle value the program holds
  std::vector<unsigned char> prop;          // its allocation properties (CUmemAllocationProp)
  std::vector<std::pair<int, int>> access;  // (device, access flags) the program granted
  int refs = 1;  // references the program holds (create, retain, less release); written idle
};

struct Region {
  // Fixed at allocation.
  std::uint64_t id = 0;  // allocation sequence number, unique in the process
  DevicePtr va = 0;
  std::size_t size = 0;    // bytes the caller asked for
  std::size_t mapped = 0;  // size rounded up to the device's granularity
  int device = 0;
  Context ctx = nullptr;  // the context current when it was allocated
  std::uintptr_t call_site = 0;
  std::shared_ptr<const CallSite> site;  // Python frames and native addresses (may be null)
  std::string rule;                      // the tagging rule that decided its tag ("": none)
  double created_at = 0;                 // seconds since the epoch

  // Read by snapshots: written only under the table's lock.
  std::string tag;
  RegionState state = RegionState::kAwake;
  Policy slept_policy = Policy::kOffload;  // what the last sleep did with the contents
  std::shared_ptr<Mirror> mirror;
  // Asleep: where its contents are when not in the mirror (pageable memory or disk); else null.
  std::shared_ptr<Stash> stash;
  bool gated = true;  // while not awake, it keeps the gate closed (SleepRequest::gate)

  // Owned by whoever moved the region into a busy state (or the allocating/freeing thread).
  PhysHandle handle = 0;

  std::shared_ptr<AdoptedHandle> adopted;  // null: the library's own allocation
};

// A copy of a region's observable fields.
struct RegionInfo {
  std::uint64_t id;
  DevicePtr va;
  std::size_t size;
  std::size_t mapped;
  int device;
  std::uintptr_t call_site;
  double created_at;
  std::string tag;
  RegionState state;
  Policy slept_policy;
  std::size_t mirror_bytes;    // host bytes prepared for this region
  std::size_t mirror_size;     // host bytes its mirror will hold (0: no mirror yet)
  std::size_t pageable_bytes;  // asleep: its contents in pageable host memory
  std::size_t spilled_bytes;   // asleep: its contents on disk
  bool adopted;                // the program's own cuMemCreate memory
  std::shared_ptr<const CallSite> site;
  std::string rule;
};

class RegionTable {
 public:
  void insert(std::shared_ptr<Region> region);
  // The region whose range starts at `va`, or null.
  std::shared_ptr<Region> find(DevicePtr va) const;

  // Atomically moves every region for which `select` is true from `from` to the busy state `to`
  // and returns them in address order.
  std::vector<std::shared_ptr<Region>> claim(const std::function<bool(const Region&)>& select,
                                             RegionState from, RegionState to);
  // Moves claimed regions to `state` and wakes waiters.
  void settle(const std::vector<std::shared_ptr<Region>>& regions, RegionState state);
  // Runs `fn` under the table's lock (to write snapshot-visible fields of a region).
  void update(const std::function<void()>& fn);
  // Calls `fn` on every region; only from inside update().
  void for_each_locked(const std::function<void(Region&)>& fn);

  // Waits until the region at `va` is not busy, then removes it from the table and returns it;
  // null when no region starts at `va`.
  std::shared_ptr<Region> remove_when_idle(DevicePtr va);
  // Waits until the region at `va` is not busy; removes and returns it if awake. Null when no
  // region starts at `va`, or (with *asleep set) when it is asleep, which leaves it in place.
  std::shared_ptr<Region> remove_when_awake(DevicePtr va, bool* asleep);
  // Waits until the region at `va` is not busy, then runs `fn` on it under the table's lock (so
  // no sleep or wake can claim it meanwhile). False when no region starts at `va`.
  bool with_idle(DevicePtr va, const std::function<void(Region&)>& fn);

  std::vector<RegionInfo> snapshot() const;
  // A copy of the region whose range contains `addr`.
  std::optional<RegionInfo> info_containing(DevicePtr addr) const;

 private:
  static RegionInfo info_of(const Region& r);
  // Waits (under `lock`) until the region at `va` is neither sleeping nor waking; end() when no
  // region starts at `va`.
  std::map<DevicePtr, std::shared_ptr<Region>>::iterator wait_idle(
      std::unique_lock<std::mutex>& lock, DevicePtr va);

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<DevicePtr, std::shared_ptr<Region>> by_va_;
};

}  // namespace gpusleep

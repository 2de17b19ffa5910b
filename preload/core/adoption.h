// Physical memory the program creates and maps itself (cuMemCreate and kin). The hooks call these
// around the real driver calls. A handle mapped once, whole, with access granted is adopted as a
// region of its tag and sleeps like the library's own; any other use (several mappings, export
// to another process, multicast) leaves it awake and counted as not sleepable. The program keeps
// its handle value (the key); after a wake the driver's handle behind it is a new one, which
// current() translates to.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/allocation.h"
#include "core/region.h"
#include "core/site_context.h"
#include "driver/driver.h"

namespace gpusleep {

struct EngineParts;

class ProgramMemory {
 public:
  enum class State { kUnknown, kResident, kAsleep, kLost };
  enum class Unmap { kNotOurs, kUnmapReal, kAlreadyUnmapped };
  enum class Release { kNotOurs, kReleaseReal, kNothingToRelease, kStillHeld };

  explicit ProgramMemory(EngineParts& parts) : parts_(parts) {}

  // Whether `value` is the key of a live handle (a new handle of that value must not reach the
  // program).
  bool key_taken(std::uint64_t value) const;
  // After a cuMemCreate of `bytes` on `device` (-1: not device memory) that gave `key`.
  void created(std::uint64_t key, std::size_t bytes, int device, const void* prop,
               std::size_t prop_size, std::uintptr_t call_site, SiteContext* site);
  // The driver handle behind `key` now. kLost: its contents went with an unmap while asleep.
  State current(std::uint64_t key, PhysHandle* real);
  // The key the program knows for the driver handle `real` (`real` itself if none).
  std::uint64_t key_of(PhysHandle real) const;
  // Before a cuMemMap of `key`: a second mapping un-adopts it. kAsleep: refuse the call.
  State prepare_map(std::uint64_t key, PhysHandle* real);
  void mapped(DevicePtr va, std::size_t size, std::size_t offset, std::uint64_t key);
  // Before cuMemSetAccess: false when the range holds asleep memory (refuse the call).
  bool access_allowed(DevicePtr va, std::size_t size) const;
  // After cuMemSetAccess: the (device, flags) granted; a handle that became eligible is adopted.
  void access_set(DevicePtr va, std::size_t size,
                  const std::vector<std::pair<int, int>>& device_flags);
  // Before cuMemUnmap at `va`: waits for a sleep or wake moving it.
  Unmap unmap(DevicePtr va);
  Release release(std::uint64_t key, PhysHandle* real);
  // cuMemRetainAllocationHandle gave the program one more reference; returns the references it
  // held before (0: the driver's new reference is the one now held on its behalf).
  int retained(std::uint64_t key);
  // Makes `key` not sleepable for good (`why`: "exported"...). kAsleep: refuse the call.
  State pin(std::uint64_t key, const char* why, PhysHandle* real);
  // The handles that are not regions (not sleepable): how many, and their bytes.
  std::pair<std::size_t, std::size_t> unsleepable() const;

 private:
  struct Handle {
    std::size_t bytes = 0;
    int device = 0;
    std::vector<unsigned char> prop;
    RegionOrigin origin;  // what the region gets when adopted
    // The program's references (create, retains, less releases). While adopted they are counted
    // in AdoptedHandle::refs and copied back here when the handle leaves the region table; an
    // adopted handle is mapped, so drop_if_gone() never needs them meanwhile.
    int refs = 1;
    PhysHandle current = 0;  // the driver's handle now, when not adopted (0: lost)
    int mappings = 0;
    DevicePtr va = 0;  // its mapping when it has exactly one
    std::size_t map_size = 0;
    std::size_t map_offset = 0;
    std::vector<std::pair<int, int>> access;  // (device, flags) granted on that mapping
    const char* pinned = nullptr;             // why it may never sleep
    std::shared_ptr<AdoptedHandle> adopted;   // set while it is a region at `va`
  };
  // Caller holds mu_.
  void adopt_if_eligible(Handle& h, std::uint64_t key);
  bool unadopt(Handle& h, bool* asleep);
  void drop_if_gone(std::uint64_t key);

  EngineParts& parts_;
  // Guards the program's handles; taken before the region table's lock, never under the
  // operation lock.
  mutable std::mutex mu_;
  std::unordered_map<std::uint64_t, Handle> handles_;
  std::map<DevicePtr, std::uint64_t> mappings_;  // mapping address -> key
};

}  // namespace gpusleep

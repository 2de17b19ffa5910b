// Allocation and free of the library's regions, and the one place a region is built and put in
// the table (the program's adopted memory goes through it too).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "core/engine_types.h"
#include "core/region.h"
#include "core/site_context.h"

namespace gpusleep {

struct EngineParts;

// Where a new region comes from: its id and what tagged it.
struct RegionOrigin {
  std::uint64_t id = 0;
  std::uintptr_t call_site = 0;
  std::shared_ptr<const CallSite> site;
  std::string rule;
  std::string tag;
};

// A region of `mapped` bytes at `va` on `device`, backed by `handle`, awake, with a mirror when
// its tag offloads. Not yet in the table.
std::shared_ptr<Region> make_region(EngineParts& parts, const RegionOrigin& origin, DevicePtr va,
                                    std::size_t size, std::size_t mapped, int device, Context ctx,
                                    PhysHandle handle);
// Puts `region` in the table, then lets go of `peers_lock` (the peer set's lock, held since its
// access was granted) and queues its mirror's background preparation.
void admit_region(EngineParts& parts, std::shared_ptr<Region> region,
                  std::unique_lock<std::mutex> peers_lock);

// Engine::allocate and Engine::free (engine.h).
AllocOutcome allocate_region(EngineParts& parts, std::size_t size, int device,
                             std::uintptr_t call_site, DevicePtr* out, SiteContext* site);
FreeOutcome free_region(EngineParts& parts, DevicePtr va);

}  // namespace gpusleep

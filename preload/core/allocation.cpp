// Allocation and free. Neither takes the operation lock: the host's threads keep allocating while
// a controller moves other tags.
#include "core/allocation.h"

#include "base/clock.h"
#include "base/log.h"
#include "core/engine_parts.h"

namespace gpusleep {

std::shared_ptr<Region> make_region(EngineParts& parts, const RegionOrigin& origin, DevicePtr va,
                                    std::size_t size, std::size_t mapped, int device, Context ctx,
                                    PhysHandle handle) {
  auto region = std::make_shared<Region>();
  region->id = origin.id;
  region->va = va;
  region->size = size;
  region->mapped = mapped;
  region->device = device;
  region->ctx = ctx;
  region->call_site = origin.call_site;
  region->site = origin.site;
  region->rule = origin.rule;
  region->created_at = wall_seconds();
  region->tag = origin.tag;
  region->handle = handle;
  if (parts.policies.for_tag(origin.tag) == Policy::kOffload) {
    region->mirror =
        std::make_shared<Mirror>(parts.driver, mirror_size(size), ctx, &parts.tiers.budget());
  }
  return region;
}

void admit_region(EngineParts& parts, std::shared_ptr<Region> region,
                  std::unique_lock<std::mutex> peers_lock) {
  parts.tags.add(region->tag);
  const std::string tag = region->tag;
  std::shared_ptr<Mirror> mirror = region->mirror;
  parts.table.insert(std::move(region));
  peers_lock.unlock();
  if (mirror != nullptr && parts.options.eager_mirrors) {
    parts.preparer.submit(mirror, false, parts.tags.has_slept(tag));
  }
}

AllocOutcome allocate_region(EngineParts& parts, std::size_t size, int device,
                             std::uintptr_t call_site, DevicePtr* out, SiteContext* site) {
  Driver& driver = parts.driver;
  DeviceCatalog::Info info;
  if (parts.options.disable || size == 0 || !parts.devices.info(device, &info) || !info.vmm) {
    return AllocOutcome::kPassthrough;
  }
  Context ctx = nullptr;
  if (DrvStatus rc = driver.ensure_context(device, &ctx)) {
    GS_WARN("no context for device %d (%s); allocation passes through", device,
            driver.describe(rc).c_str());
    return AllocOutcome::kPassthrough;
  }
  const std::uint64_t id = parts.next_id++;
  TagDecision decision = parts.tagger.decide(AllocationSite{size, device, id, call_site}, site);
  if (decision.passthrough) {
    GS_DEBUG("allocation %llu (%zu bytes) passes through by rule \"%s\"",
             static_cast<unsigned long long>(id), size, decision.rule.c_str());
    return AllocOutcome::kPassthrough;
  }
  const std::size_t mapped = round_up(size, info.granularity);
  if (mapped < size) return AllocOutcome::kPassthrough;

  DevicePtr va = 0;
  PhysHandle handle = 0;
  const char* step = "reserve";
  DrvStatus rc = driver.reserve(mapped, info.granularity, &va);
  if (rc == kDrvOk) {
    step = "create";
    rc = driver.create(device, mapped, &handle);
    if (rc == kDrvOk) {
      step = "map";
      rc = driver.map(va, mapped, handle);
      if (rc == kDrvOk) {
        step = "set access";
        rc = driver.set_access(va, mapped, device);
        if (rc != kDrvOk) driver.unmap(va, mapped);
      }
      if (rc != kDrvOk) driver.release(handle);
    }
    if (rc != kDrvOk) driver.unreserve(va, mapped);
  }
  if (rc == kDrvOutOfMemory) return AllocOutcome::kOutOfMemory;
  if (rc != kDrvOk) {
    GS_WARN("%s of %zu bytes on device %d failed (%s); allocation passes through", step, mapped,
            device, driver.describe(rc).c_str());
    return AllocOutcome::kPassthrough;
  }

  std::unique_lock<std::mutex> peers_lock = parts.peers.lock();
  grant_accessors(driver, va, mapped, parts.peers.accessors_of(device));
  RegionOrigin origin{id, call_site, site != nullptr ? site->call_site() : nullptr, decision.rule,
                      decision.tag};
  admit_region(parts, make_region(parts, origin, va, size, mapped, device, ctx, handle),
               std::move(peers_lock));
  GS_DEBUG("region %llu: %zu bytes at 0x%llx on device %d, tag %s",
           static_cast<unsigned long long>(id), size, static_cast<unsigned long long>(va), device,
           decision.tag.c_str());
  *out = va;
  return AllocOutcome::kManaged;
}

FreeOutcome free_region(EngineParts& parts, DevicePtr va) {
  Driver& driver = parts.driver;
  std::shared_ptr<Region> existing = parts.table.find(va);
  if (existing == nullptr || existing->adopted != nullptr) return FreeOutcome::kNotOurs;
  std::shared_ptr<Region> region = parts.table.remove_when_idle(va);
  if (region == nullptr) return FreeOutcome::kNotOurs;
  ContextRestorer restore(driver);
  DrvStatus rc = kDrvOk;
  if (region->state == RegionState::kAwake) {
    // Like cudaFree: work still running on the memory must finish before it goes.
    rc = driver.synchronize(region->ctx);
    if (rc != kDrvOk) GS_WARN("free: synchronize failed: %s", driver.describe(rc).c_str());
    rc = driver.unmap(region->va, region->mapped);
    if (rc == kDrvOk) rc = driver.release(region->handle);
  } else {
    rc = driver.set_context(region->ctx);
  }
  if (rc == kDrvOk) rc = driver.unreserve(region->va, region->mapped);
  if (rc != kDrvOk) {
    GS_ERROR("free of region %llu at 0x%llx: %s", static_cast<unsigned long long>(region->id),
             static_cast<unsigned long long>(va), driver.describe(rc).c_str());
  }
  parts.preparer.release(std::move(region->mirror));  // unpinning is slow: not on the caller's time
  if (region->state != RegionState::kAwake) parts.open_gate_if_all_awake();
  return FreeOutcome::kFreed;
}

}  // namespace gpusleep

// The program's own physical memory: its handles, their mappings, and adoption as regions.
#include "core/adoption.h"

#include <algorithm>

#include "base/log.h"
#include "core/allocation.h"
#include "core/engine_parts.h"

namespace gpusleep {

bool ProgramMemory::key_taken(std::uint64_t value) const {
  std::lock_guard<std::mutex> lock(mu_);
  return handles_.count(value) != 0;
}

void ProgramMemory::created(std::uint64_t key, std::size_t bytes, int device, const void* prop,
                            std::size_t prop_size, std::uintptr_t call_site, SiteContext* site) {
  const std::uint64_t id = parts_.next_id++;
  TagDecision decision = parts_.tagger.decide(AllocationSite{bytes, device, id, call_site}, site);
  Handle h;
  h.bytes = bytes;
  h.device = device;
  h.prop.assign(static_cast<const unsigned char*>(prop),
                static_cast<const unsigned char*>(prop) + prop_size);
  h.origin = RegionOrigin{id, call_site, site != nullptr ? site->call_site() : nullptr,
                          decision.rule, decision.tag};
  h.current = key;
  if (decision.passthrough || device < 0) h.pinned = "left to the program";
  parts_.tags.add(h.origin.tag);
  std::lock_guard<std::mutex> lock(mu_);
  handles_[key] = std::move(h);
}

ProgramMemory::State ProgramMemory::current(std::uint64_t key, PhysHandle* real) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = handles_.find(key);
  if (it == handles_.end()) return State::kUnknown;
  Handle& h = it->second;
  if (h.adopted == nullptr) {
    *real = h.current;
    return h.current != 0 ? State::kResident : State::kLost;
  }
  State state = State::kResident;
  parts_.table.with_idle(h.va, [&](Region& r) {
    *real = r.handle;
    if (r.state == RegionState::kAsleep) state = State::kAsleep;
  });
  return state;
}

std::uint64_t ProgramMemory::key_of(PhysHandle real) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [key, h] : handles_) {
    if (h.adopted == nullptr && h.current == real) return key;
    if (h.adopted != nullptr) {
      std::shared_ptr<Region> r = parts_.table.find(h.va);
      if (r != nullptr && r->handle == real) return key;
    }
  }
  return real;
}

bool ProgramMemory::unadopt(Handle& h, bool* asleep) {
  *asleep = false;
  if (h.adopted == nullptr) return true;
  std::shared_ptr<Region> region = parts_.table.remove_when_awake(h.va, asleep);
  if (*asleep) return false;
  if (region != nullptr) {
    h.current = region->handle;
    parts_.preparer.release(std::move(region->mirror));
  }
  h.refs = h.adopted->refs;
  h.adopted = nullptr;
  return true;
}

ProgramMemory::State ProgramMemory::prepare_map(std::uint64_t key, PhysHandle* real) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = handles_.find(key);
  if (it == handles_.end()) return State::kUnknown;
  Handle& h = it->second;
  bool asleep = false;
  if (h.mappings > 0 && !unadopt(h, &asleep)) return State::kAsleep;
  if (h.adopted == nullptr && h.current == 0) {
    // Unmapped while asleep, its contents are gone: give it fresh memory, as a discard would.
    PhysHandle fresh = 0;
    if (parts_.driver.create_like(h.prop.data(), h.prop.size(), h.bytes, &fresh) != kDrvOk) {
      return State::kLost;
    }
    h.current = fresh;
    GS_WARN("handle 0x%llx was unmapped while asleep; it is mapped again with fresh memory",
            static_cast<unsigned long long>(key));
  }
  *real = h.current;
  return State::kResident;
}

void ProgramMemory::mapped(DevicePtr va, std::size_t size, std::size_t offset, std::uint64_t key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = handles_.find(key);
  if (it == handles_.end()) return;
  Handle& h = it->second;
  if (++h.mappings == 1) {
    h.va = va;
    h.map_size = size;
    h.map_offset = offset;
    h.access.clear();
  }
  mappings_[va] = key;
}

bool ProgramMemory::access_allowed(DevicePtr va, std::size_t size) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = mappings_.lower_bound(va); it != mappings_.end() && it->first < va + size; ++it) {
    auto h = handles_.find(it->second);
    if (h == handles_.end() || h->second.adopted == nullptr) continue;
    std::optional<RegionInfo> info = parts_.table.info_containing(it->first);
    if (info && info->state != RegionState::kAwake) return false;
  }
  return true;
}

void ProgramMemory::access_set(DevicePtr va, std::size_t size,
                               const std::vector<std::pair<int, int>>& device_flags) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = mappings_.lower_bound(va); it != mappings_.end() && it->first < va + size; ++it) {
    auto hit = handles_.find(it->second);
    if (hit == handles_.end()) continue;
    Handle& h = hit->second;
    if (h.mappings != 1 || h.va != it->first || h.va + h.map_size > va + size) continue;
    for (const auto& [device, flags] : device_flags) {
      auto a = std::find_if(h.access.begin(), h.access.end(),
                            [device = device](const auto& e) { return e.first == device; });
      if (a == h.access.end()) {
        h.access.emplace_back(device, flags);
      } else {
        a->second = flags;
      }
    }
    if (h.adopted != nullptr) {
      // Sleep and wake read the access list only while they hold the region.
      std::shared_ptr<AdoptedHandle> adopted = h.adopted;
      parts_.table.with_idle(h.va, [&](Region&) { adopted->access = h.access; });
    } else {
      adopt_if_eligible(h, hit->first);
    }
  }
}

void ProgramMemory::adopt_if_eligible(Handle& h, std::uint64_t key) {
  constexpr int kReadWrite = 3;  // CU_MEM_ACCESS_FLAGS_PROT_READWRITE
  if (h.pinned != nullptr || h.mappings != 1 || h.map_offset != 0 || h.map_size != h.bytes ||
      h.current == 0) {
    return;
  }
  bool own_access = std::any_of(h.access.begin(), h.access.end(), [&](const auto& e) {
    return e.first == h.device && e.second == kReadWrite;
  });
  DeviceCatalog::Info info;
  if (!own_access || !parts_.devices.info(h.device, &info) || !info.vmm) return;
  ContextRestorer restore(parts_.driver);
  Context ctx = nullptr;
  if (parts_.driver.ensure_context(h.device, &ctx) != kDrvOk) return;
  auto adopted = std::make_shared<AdoptedHandle>();
  adopted->key = key;
  adopted->prop = h.prop;
  adopted->access = h.access;
  adopted->refs = h.refs;
  std::shared_ptr<Region> region =
      make_region(parts_, h.origin, h.va, h.bytes, h.bytes, h.device, ctx, h.current);
  region->adopted = adopted;
  admit_region(parts_, std::move(region), parts_.peers.lock());
  h.adopted = adopted;
  h.current = 0;
  GS_DEBUG("region %llu: the program's handle 0x%llx (%zu bytes at 0x%llx on device %d), tag %s",
           static_cast<unsigned long long>(h.origin.id), static_cast<unsigned long long>(key),
           h.bytes, static_cast<unsigned long long>(h.va), h.device, h.origin.tag.c_str());
}

ProgramMemory::Unmap ProgramMemory::unmap(DevicePtr va) {
  std::lock_guard<std::mutex> lock(mu_);
  auto m = mappings_.find(va);
  if (m == mappings_.end()) return Unmap::kNotOurs;
  const std::uint64_t key = m->second;
  mappings_.erase(m);
  auto it = handles_.find(key);
  if (it == handles_.end()) return Unmap::kUnmapReal;
  Handle& h = it->second;
  Unmap out = Unmap::kUnmapReal;
  if (h.adopted != nullptr && h.va == va) {
    std::shared_ptr<Region> region = parts_.table.remove_when_idle(va);
    if (region != nullptr) {
      if (region->state == RegionState::kAsleep) {
        out = Unmap::kAlreadyUnmapped;
        h.current = 0;  // its memory went at sleep: nothing behind the handle now
        parts_.open_gate_if_all_awake();
      } else {
        h.current = region->handle;
      }
      parts_.preparer.release(std::move(region->mirror));
    }
    h.refs = h.adopted->refs;
    h.adopted = nullptr;
  }
  --h.mappings;
  if (h.va == va) h.va = 0;
  drop_if_gone(key);
  return out;
}

void ProgramMemory::drop_if_gone(std::uint64_t key) {
  auto it = handles_.find(key);
  if (it != handles_.end() && it->second.refs <= 0 && it->second.mappings <= 0) {
    handles_.erase(it);
  }
}

ProgramMemory::Release ProgramMemory::release(std::uint64_t key, PhysHandle* real) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = handles_.find(key);
  if (it == handles_.end()) return Release::kNotOurs;
  Handle& h = it->second;
  Release out = Release::kStillHeld;
  if (h.adopted != nullptr) {
    std::shared_ptr<AdoptedHandle> adopted = h.adopted;
    parts_.table.with_idle(h.va, [&](Region& r) {
      if (--adopted->refs > 0) return;
      // Asleep: the sleep already dropped the program's reference along with the memory.
      out = r.state == RegionState::kAsleep ? Release::kNothingToRelease : Release::kReleaseReal;
      *real = r.handle;
    });
  } else if (--h.refs <= 0) {
    out = h.current != 0 ? Release::kReleaseReal : Release::kNothingToRelease;
    *real = h.current;
  }
  drop_if_gone(key);
  return out;
}

int ProgramMemory::retained(std::uint64_t key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = handles_.find(key);
  if (it == handles_.end()) return 0;
  Handle& h = it->second;
  int before = h.refs;
  if (h.adopted != nullptr) {
    std::shared_ptr<AdoptedHandle> adopted = h.adopted;
    parts_.table.with_idle(h.va, [&](Region&) { before = adopted->refs++; });
  } else {
    ++h.refs;
  }
  return before;
}

ProgramMemory::State ProgramMemory::pin(std::uint64_t key, const char* why, PhysHandle* real) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = handles_.find(key);
  if (it == handles_.end()) return State::kUnknown;
  Handle& h = it->second;
  bool asleep = false;
  if (!unadopt(h, &asleep)) return State::kAsleep;
  if (h.pinned == nullptr) {
    h.pinned = why;
    GS_INFO("the program's handle 0x%llx (%zu bytes) is %s: it stays awake from now on",
            static_cast<unsigned long long>(key), h.bytes, why);
  }
  *real = h.current;
  return h.current != 0 ? State::kResident : State::kLost;
}

std::pair<std::size_t, std::size_t> ProgramMemory::unsleepable() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::size_t count = 0;
  std::size_t bytes = 0;
  for (const auto& [key, h] : handles_) {
    if (h.adopted != nullptr) continue;
    ++count;
    bytes += h.bytes;
  }
  return {count, bytes};
}

}  // namespace gpusleep

// The region table.
#include "core/region.h"

namespace gpusleep {

const char* region_state_name(RegionState state) {
  switch (state) {
    case RegionState::kAwake:
      return "awake";
    case RegionState::kAsleep:
      return "asleep";
    case RegionState::kSleeping:
      return "sleeping";
    case RegionState::kWaking:
      return "waking";
  }
  return "?";
}

void RegionTable::insert(std::shared_ptr<Region> region) {
  std::lock_guard<std::mutex> lock(mu_);
  DevicePtr va = region->va;
  by_va_[va] = std::move(region);
}

std::shared_ptr<Region> RegionTable::find(DevicePtr va) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_va_.find(va);
  return it == by_va_.end() ? nullptr : it->second;
}

std::optional<RegionInfo> RegionTable::info_containing(DevicePtr addr) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_va_.upper_bound(addr);
  if (it == by_va_.begin()) return std::nullopt;
  --it;
  const Region& r = *it->second;
  if (addr >= r.va + r.mapped) return std::nullopt;
  return info_of(r);
}

std::vector<std::shared_ptr<Region>> RegionTable::claim(
    const std::function<bool(const Region&)>& select, RegionState from, RegionState to) {
  std::vector<std::shared_ptr<Region>> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [va, region] : by_va_) {
    if (region->state == from && select(*region)) {
      region->state = to;
      out.push_back(region);
    }
  }
  return out;
}

void RegionTable::settle(const std::vector<std::shared_ptr<Region>>& regions, RegionState state) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& r : regions)
      r->state = state;
  }
  cv_.notify_all();
}

void RegionTable::update(const std::function<void()>& fn) {
  std::lock_guard<std::mutex> lock(mu_);
  fn();
}

void RegionTable::for_each_locked(const std::function<void(Region&)>& fn) {
  for (auto& [va, region] : by_va_)
    fn(*region);
}

std::map<DevicePtr, std::shared_ptr<Region>>::iterator RegionTable::wait_idle(
    std::unique_lock<std::mutex>& lock, DevicePtr va) {
  for (;;) {
    auto it = by_va_.find(va);
    if (it == by_va_.end()) return it;
    RegionState s = it->second->state;
    if (s == RegionState::kAwake || s == RegionState::kAsleep) return it;
    cv_.wait(lock);
  }
}

std::shared_ptr<Region> RegionTable::remove_when_idle(DevicePtr va) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = wait_idle(lock, va);
  if (it == by_va_.end()) return nullptr;
  auto region = std::move(it->second);
  by_va_.erase(it);
  return region;
}

std::shared_ptr<Region> RegionTable::remove_when_awake(DevicePtr va, bool* asleep) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = wait_idle(lock, va);
  *asleep = it != by_va_.end() && it->second->state == RegionState::kAsleep;
  if (it == by_va_.end() || *asleep) return nullptr;
  auto region = std::move(it->second);
  by_va_.erase(it);
  return region;
}

bool RegionTable::with_idle(DevicePtr va, const std::function<void(Region&)>& fn) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = wait_idle(lock, va);
  if (it == by_va_.end()) return false;
  fn(*it->second);
  return true;
}

RegionInfo RegionTable::info_of(const Region& r) {
  return RegionInfo{r.id,
                    r.va,
                    r.size,
                    r.mapped,
                    r.device,
                    r.call_site,
                    r.created_at,
                    r.tag,
                    r.state,
                    r.slept_policy,
                    r.mirror ? r.mirror->prepared_bytes() : 0,
                    r.mirror ? r.mirror->bytes() : 0,
                    r.stash && r.stash->tier() == Stash::Tier::kPageable ? r.stash->bytes() : 0,
                    r.stash && r.stash->tier() == Stash::Tier::kDisk ? r.stash->bytes() : 0,
                    r.adopted != nullptr,
                    r.site,
                    r.rule};
}

std::vector<RegionInfo> RegionTable::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<RegionInfo> out;
  out.reserve(by_va_.size());
  for (const auto& [va, region] : by_va_)
    out.push_back(info_of(*region));
  return out;
}

}  // namespace gpusleep

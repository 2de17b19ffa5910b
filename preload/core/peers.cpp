// Peer access grants.
#include "core/peers.h"

#include "base/log.h"
#include "core/engine_parts.h"

namespace gpusleep {

std::vector<int> PeerSet::accessors_of(int owner) const {
  std::vector<int> out;
  for (auto it = peers_.lower_bound({owner, -1}); it != peers_.end() && it->first == owner; ++it)
    out.push_back(it->second);
  return out;
}

std::vector<PeerGrant> PeerSet::grants() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<PeerGrant> out;
  for (const auto& [owner, accessor] : peers_)
    out.push_back(PeerGrant{accessor, owner});
  return out;
}

void grant_accessors(Driver& driver, DevicePtr va, std::size_t size,
                     const std::vector<int>& accessors) {
  for (int accessor : accessors) {
    if (DrvStatus rc = driver.set_access(va, size, accessor)) {
      GS_WARN("cannot grant device %d access to 0x%llx (%zu bytes): %s", accessor,
              static_cast<unsigned long long>(va), size, driver.describe(rc).c_str());
    }
  }
}

void grant_peer(EngineParts& parts, int accessor, int owner) {
  if (accessor == owner || accessor < 0 || owner < 0) return;
  std::lock_guard<std::mutex> op(parts.op_mu);
  std::unique_lock<std::mutex> lock = parts.peers.lock();
  if (!parts.peers.add(accessor, owner)) return;
  // Claiming keeps a concurrent free from unmapping a region while its access changes.
  auto regions = parts.table.claim([owner](const Region& r) { return r.device == owner; },
                                   RegionState::kAwake, RegionState::kWaking);
  for (const auto& r : regions)
    grant_accessors(parts.driver, r->va, r->mapped, {accessor});
  parts.table.settle(regions, RegionState::kAwake);
  GS_INFO(
      "peer access: device %d may use device %d's memory (%zu regions granted now; asleep "
      "ones on wake)",
      accessor, owner, regions.size());
}

void revoke_peer(EngineParts& parts, int accessor, int owner) {
  std::lock_guard<std::mutex> op(parts.op_mu);
  std::unique_lock<std::mutex> lock = parts.peers.lock();
  parts.peers.remove(accessor, owner);
}

}  // namespace gpusleep

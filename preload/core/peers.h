// Peer access: which devices' kernels may use which device's regions. A grant covers every region
// on the owner now, at each later allocation and after every wake (VMM mappings do not inherit
// cudaDeviceEnablePeerAccess).
#pragma once

#include <cstddef>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "core/engine_types.h"
#include "driver/driver.h"

namespace gpusleep {

struct EngineParts;

// The grants in force. Allocation holds lock() from granting a new region's access until the
// region is in the table, so a concurrent grant never misses it.
class PeerSet {
 public:
  std::unique_lock<std::mutex> lock() const { return std::unique_lock<std::mutex>(mu_); }
  // The devices granted access to `owner`'s memory. Caller holds lock().
  std::vector<int> accessors_of(int owner) const;
  // Caller holds lock(). False when the grant was already there.
  bool add(int accessor, int owner) { return peers_.insert({owner, accessor}).second; }
  void remove(int accessor, int owner) { peers_.erase({owner, accessor}); }
  // Every grant (takes the lock).
  std::vector<PeerGrant> grants() const;

 private:
  mutable std::mutex mu_;
  std::set<std::pair<int, int>> peers_;  // (owner, accessor)
};

// Grants each of `accessors` access to a mapped range; failures are logged, not fatal.
void grant_accessors(Driver& driver, DevicePtr va, std::size_t size,
                     const std::vector<int>& accessors);
// Kernels on `accessor` may use memory on `owner` from now on; the awake regions on `owner` are
// granted at once. Waits for a sleep or wake in progress.
void grant_peer(EngineParts& parts, int accessor, int owner);
// Stops future grants (mappings keep their access).
void revoke_peer(EngineParts& parts, int accessor, int owner);

}  // namespace gpusleep

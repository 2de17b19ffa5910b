// Sleep, as its named phases: claim the regions, reserve host memory for their mirrors, close the
// gate, quiesce the devices, copy out, release the device memory, report.
#include <chrono>
#include <map>

#include "base/bytes.h"
#include "base/clock.h"
#include "base/log.h"
#include "core/engine_parts.h"
#include "core/operation.h"

namespace gpusleep {

std::vector<TagReport> tag_reports(const std::vector<std::shared_ptr<Region>>& regions,
                                   const std::vector<Policy>& policies) {
  std::map<std::string, TagReport> by_tag;
  for (std::size_t i = 0; i < regions.size(); ++i) {
    TagReport& t = by_tag[regions[i]->tag];
    t.tag = regions[i]->tag;
    t.policy = policies[i];
    t.regions += 1;
    t.bytes += regions[i]->mapped;
  }
  std::vector<TagReport> out;
  for (auto& [name, report] : by_tag)
    out.push_back(std::move(report));
  return out;
}

namespace {

constexpr std::size_t kSleepHostReserve = std::size_t{1} << 30;  // host memory a sleep leaves

class SleepOperation : public Operation {
 public:
  SleepOperation(EngineParts& parts, const SleepRequest& request)
      : Operation(parts), request_(request) {}

  OpResult run() {
    if (claim(request_.tags, RegionState::kAwake, RegionState::kSleeping) &&
        reserve_host_memory() && close_gate() && quiesce()) {
      copy_out();
      release();
      report();
    }
    return std::move(result_);
  }

 private:
  // Gives the claimed regions back awake and fails the sleep: nothing was touched.
  bool give_back(Failure code, std::string message) {
    parts_.table.settle(claimed_, RegionState::kAwake);
    result_.fail(code, std::move(message));
    return false;
  }

  // Each region's policy, a mirror for each region to offload, and the host memory the mirrors
  // still need; their pinning starts now, to overlap the quiesce and the first copies.
  bool reserve_host_memory() {
    policy_.resize(claimed_.size());
    std::size_t host_needed = 0;
    for (std::size_t i = 0; i < claimed_.size(); ++i) {
      Region& r = *claimed_[i];
      policy_[i] = request_.policy.value_or(parts_.policies.for_tag(r.tag));
      if (policy_[i] != Policy::kOffload) continue;
      if (r.mirror == nullptr) {
        auto mirror = std::make_shared<Mirror>(parts_.driver, mirror_size(r.size), r.ctx);
        parts_.table.update([&] { r.mirror = std::move(mirror); });
      }
      host_needed += r.mirror->bytes() - r.mirror->prepared_bytes();
    }
    if (host_needed == 0) return true;
    std::size_t available = host_available_bytes();
    if (available < kSleepHostReserve || host_needed > available - kSleepHostReserve) {
      give_back(Failure::kHostOutOfMemory,
                "host mirrors need " + format_bytes(host_needed) + " more; " +
                    format_bytes(available) + " of host memory is available (" +
                    format_bytes(kSleepHostReserve) + " is kept for the host)");
      result_.error.needed_bytes = host_needed;
      result_.error.free_bytes = available;
      return false;
    }
    for (std::size_t i = 0; i < claimed_.size(); ++i) {
      if (policy_[i] == Policy::kOffload) parts_.preparer.submit(claimed_[i]->mirror, true);
    }
    return true;
  }

  // From here the program's GPU calls wait (gate.h).
  bool close_gate() {
    sync_started_ = monotonic_seconds();
    parts_.table.update([&] {
      for (const auto& r : claimed_)
        r->gated = request_.gate;
    });
    if (parts_.gate == nullptr || !request_.gate) return true;
    std::string busy;
    if (parts_.gate->close(std::chrono::milliseconds(parts_.options.gate_drain_ms), &busy)) {
      return true;
    }
    return give_back(Failure::kGpuBusy,
                     "a thread of the process stayed inside " + busy + " for " +
                         std::to_string(parts_.options.gate_drain_ms) +
                         " ms (GPUSLEEP_GATE_DRAIN_MS); nothing was put to sleep");
  }

  // A kernel still running on memory about to be unmapped would fault the context.
  bool quiesce() {
    std::set<Context> contexts;
    for (const auto& r : claimed_)
      contexts.insert(r->ctx);
    for (Context ctx : contexts) {
      if (DrvStatus rc = parts_.driver.synchronize(ctx)) {
        return give_back(Failure::kDriverError,
                         "device did not synchronize: " + parts_.driver.describe(rc));
      }
    }
    result_.sync_seconds = monotonic_seconds() - sync_started_;
    return true;
  }

  // Queues the copies piece by piece as mirrors become ready, with a fence after each region.
  void copy_out() {
    copy_started_ = monotonic_seconds();
    fences_.resize(claimed_.size());
    queued_.assign(claimed_.size(), 0);
    DrvStatus rc = kDrvOk;
    for (std::size_t i = 0; i < claimed_.size() && rc == kDrvOk && host_error_.empty(); ++i) {
      if (policy_[i] != Policy::kOffload) continue;
      Region& r = *claimed_[i];
      Mirror& m = *r.mirror;
      bool complete = true;
      for (std::size_t p = 0; p < m.piece_count() && rc == kDrvOk; ++p) {
        if (!m.ensure_piece(p, &host_error_)) {
          complete = false;
          break;
        }
        std::size_t off = m.piece_offset(p);
        rc = parts_.copier.issue(r.ctx, Direction::kToHost, m.at(off), r.va + off, m.piece_size(p));
      }
      if (complete && rc == kDrvOk) rc = parts_.copier.fence(&fences_[i]);
      queued_[i] = complete && rc == kDrvOk;
    }
    copy_rc_ = rc;
  }

  // Unmaps and releases region `i`, or keeps it awake when the unmap fails.
  void release_one(std::size_t i) {
    Driver& driver = parts_.driver;
    Region& r = *claimed_[i];
    const double u = monotonic_seconds();
    driver.set_context(r.ctx);
    DrvStatus urc = driver.unmap(r.va, r.mapped);
    if (urc != kDrvOk) {
      GS_ERROR("sleep: unmap of region %llu failed: %s; it stays awake",
               static_cast<unsigned long long>(r.id), driver.describe(urc).c_str());
      kept_.push_back(claimed_[i]);
    } else {
      // A handle the program released lives on its mapping alone: unmapping freed it.
      const bool holds_ref = r.adopted == nullptr || r.adopted->refs > 0;
      if (DrvStatus rrc = holds_ref ? driver.release(r.handle) : kDrvOk) {
        GS_ERROR("sleep: release of region %llu failed: %s", static_cast<unsigned long long>(r.id),
                 driver.describe(rrc).c_str());
      }
      r.handle = 0;
      slept_.push_back(claimed_[i]);
      slept_policy_.push_back(policy_[i]);
    }
    unmap_seconds_ += monotonic_seconds() - u;
  }

  // Releases each region as soon as its copies have landed, while later copies still run: a
  // thousand unmaps and releases cost tens of milliseconds that would otherwise follow the copies.
  // If a mirror or a copy could not even be queued, nothing is released. Otherwise discard regions
  // go first, overlapping the copies; a region whose copy fails on the device stays awake and
  // intact, and so do all after it.
  void release() {
    bool stopped = copy_rc_ != kDrvOk || !host_error_.empty();
    for (std::size_t i = 0; i < claimed_.size(); ++i) {
      if (policy_[i] == Policy::kOffload) continue;
      if (stopped) {
        kept_.push_back(claimed_[i]);
      } else {
        release_one(i);
      }
    }
    for (std::size_t i = 0; i < claimed_.size(); ++i) {
      if (policy_[i] != Policy::kOffload) continue;
      if (!queued_[i] || stopped) {
        parts_.copier.drop(&fences_[i]);
        kept_.push_back(claimed_[i]);
        continue;
      }
      if (DrvStatus wrc = parts_.copier.wait(&fences_[i])) {
        copy_rc_ = wrc;
        stopped = true;
        kept_.push_back(claimed_[i]);
        continue;
      }
      release_one(i);
    }
    DrvStatus tail_rc = parts_.copier.wait();
    if (copy_rc_ == kDrvOk) copy_rc_ = tail_rc;
    result_.copy_seconds = monotonic_seconds() - copy_started_ - unmap_seconds_;
    result_.map_seconds = unmap_seconds_;
  }

  // Settles every region asleep or awake and says what was done, and what failed.
  void report() {
    parts_.table.update([&] {
      for (std::size_t i = 0; i < slept_.size(); ++i)
        slept_[i]->slept_policy = slept_policy_[i];
    });
    // Report before settling: once settled, a free on another thread may take a region apart.
    result_.tags = tag_reports(slept_, slept_policy_);
    for (std::size_t i = 0; i < slept_.size(); ++i) {
      result_.regions += 1;
      result_.bytes += slept_[i]->mapped;
      if (slept_policy_[i] == Policy::kOffload) {
        result_.copied_bytes += slept_[i]->mirror->bytes();
      } else {
        result_.discarded_bytes += slept_[i]->mapped;
      }
    }
    parts_.table.settle(slept_, RegionState::kAsleep);
    parts_.table.settle(kept_, RegionState::kAwake);
    result_.seconds = elapsed();
    parts_.tags.record_sleep(result_.tags, result_.seconds * 1e3);
    const std::string stay_awake = std::to_string(kept_.size()) + " regions stay awake";
    if (!host_error_.empty()) {
      result_.fail(Failure::kHostOutOfMemory, "host mirror: " + host_error_ + "; " + stay_awake);
    } else if (copy_rc_ != kDrvOk) {
      result_.fail(Failure::kDriverError,
                   "copy to host failed: " + parts_.driver.describe(copy_rc_) + "; " + stay_awake);
    } else if (!kept_.empty()) {
      result_.fail(Failure::kDriverError,
                   std::to_string(kept_.size()) + " regions could not be unmapped and stay awake");
    }
    GS_INFO("slept %zu regions, %s in %.1f ms", result_.regions,
            format_bytes(result_.bytes).c_str(), result_.seconds * 1e3);
  }

  const SleepRequest& request_;
  std::vector<Policy> policy_;  // per claimed region
  double sync_started_ = 0;
  double copy_started_ = 0;
  std::vector<Copier::Fence> fences_;  // per claimed region: its copies' end
  std::vector<char> queued_;           // per claimed region: all its copies queued
  std::string host_error_;
  DrvStatus copy_rc_ = kDrvOk;
  std::vector<std::shared_ptr<Region>> slept_;
  std::vector<Policy> slept_policy_;
  std::vector<std::shared_ptr<Region>> kept_;
  double unmap_seconds_ = 0;
};

}  // namespace

OpResult sleep_tags(EngineParts& parts, const SleepRequest& request) {
  SleepOperation op(parts, request);
  return op.run();
}

}  // namespace gpusleep

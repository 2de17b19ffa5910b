// Sleep, as its named phases: claim the regions, reserve host memory for their mirrors, close the
// gate, quiesce the devices, copy out, release the device memory, report.
#include <algorithm>
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
      : Operation(parts, "sleep"), request_(request) {}

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
  // Gives the claimed regions back awake and fails the sleep: nothing was touched, and what was
  // reserved for it goes back.
  bool give_back(Failure code, std::string message) {
    for (const auto& r : claimed_) {
      if (r->mirror != nullptr) r->mirror->unreserve();
    }
    stash_.clear();
    parts_.table.settle(claimed_, RegionState::kAwake);
    result_.fail(code, std::move(message));
    return false;
  }

  // Each region's policy, and where its contents go (host_tiers.h): the pinned mirror when the
  // rest of it fits the host budget and leaves the host its reserve, else pageable host memory,
  // else the spill file, whose blocks are allocated now. A region with nowhere to go fails the
  // sleep before anything changes. Pinning starts now, to overlap the quiesce and the first copies.
  bool reserve_host_memory() {
    HostTiers& tiers = parts_.tiers;
    policy_.resize(claimed_.size());
    stash_.resize(claimed_.size());
    std::vector<std::size_t> spill_at(claimed_.size(), 0);
    std::vector<char> to_disk(claimed_.size(), 0);
    std::size_t pinning = 0;
    std::size_t pageable = 0;
    std::size_t spilled = 0;
    const std::size_t available = host_available_bytes();
    for (std::size_t i = 0; i < claimed_.size(); ++i) {
      Region& r = *claimed_[i];
      policy_[i] = request_.policy.value_or(parts_.policies.for_tag(r.tag));
      if (policy_[i] == Policy::kDiscard) continue;
      const std::size_t bytes = mirror_size(r.size);
      if (policy_[i] == Policy::kOffload) {
        if (r.mirror == nullptr) {
          auto mirror = std::make_shared<Mirror>(parts_.driver, bytes, r.ctx, &tiers.budget());
          parts_.table.update([&] { r.mirror = std::move(mirror); });
        }
        const std::size_t rest = r.mirror->bytes() - r.mirror->prepared_bytes();
        if (rest == 0) continue;
        if (available >= kSleepHostReserve && pinning + rest <= available - kSleepHostReserve &&
            r.mirror->reserve_rest()) {
          pinning += rest;
          continue;
        }
        if (tiers.pageable_enabled() && tiers.pageable_room(bytes, pageable)) {
          stash_[i] = Stash::pageable(bytes, &tiers.budget());
          if (stash_[i] != nullptr) {
            pageable += bytes;
            continue;
          }
        }
      }
      if (tiers.spill_dir().empty()) return nowhere(r, policy_[i], available);
      to_disk[i] = 1;
      spill_at[i] = spilled;
      spilled += bytes;
    }
    if (spilled > 0) {
      std::string error;
      std::shared_ptr<SpillFile> file = SpillFile::create(tiers.spill_dir(), spilled, &error);
      if (file == nullptr) {
        GS_WARN("sleep: %s", error.c_str());
        give_back(Failure::kHostOutOfMemory, "spill: " + error + "; nothing was put to sleep");
        result_.error.needed_bytes = spilled;
        result_.error.free_bytes = spill_free_bytes(tiers.spill_dir());
        return false;
      }
      for (std::size_t i = 0; i < claimed_.size(); ++i) {
        if (!to_disk[i]) continue;
        stash_[i] = Stash::disk(file, spill_at[i], mirror_size(claimed_[i]->size), &tiers.budget());
      }
    }
    for (std::size_t i = 0; i < claimed_.size(); ++i) {
      if (policy_[i] == Policy::kOffload && stash_[i] == nullptr) {
        parts_.preparer.submit(claimed_[i]->mirror, true);
      }
    }
    return true;
  }

  // Fails the sleep for region `r`, whose contents have nowhere to go, saying why of each tier.
  bool nowhere(const Region& r, Policy policy, std::size_t available) {
    HostTiers& tiers = parts_.tiers;
    std::string why;
    if (policy == Policy::kSpill) {
      why = "its tag has the spill policy";
    } else {
      BudgetUsage u = tiers.budget().usage();
      why = "the host budget (" + format_bytes(u.limit) + " for the node, " +
            format_bytes(u.node.pinned) + " pinned; GPUSLEEP_HOST_BUDGET) has no room for it, " +
            (tiers.pageable_enabled()
                 ? "the host has no room for a pageable copy (" + format_bytes(available) +
                       " available, " + format_bytes(HostTiers::kPageableReserve) + " kept)"
                 : std::string("pageable copies are off (GPUSLEEP_PAGEABLE=0)"));
    }
    why += tiers.spill_problem().empty()
               ? ", and no spill directory is set (GPUSLEEP_SPILL_DIR)"
               : ", and the spill directory is refused: " + tiers.spill_problem();
    const std::string message = "region " + std::to_string(r.id) + " (" +
                                format_bytes(mirror_size(r.size)) + ", tag '" + r.tag +
                                "') has nowhere to go: " + why + "; nothing was put to sleep";
    GS_WARN("sleep: %s", message.c_str());
    const std::size_t needed = mirror_size(r.size);
    give_back(Failure::kHostOutOfMemory, message);
    result_.error.needed_bytes = needed;
    result_.error.free_bytes = available;
    return false;
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
      if (policy_[i] != Policy::kOffload || stash_[i] != nullptr) continue;
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
    // The other tiers go through the staging ring while the mirror copies run; it returns once
    // every byte has landed, so their regions need no fence.
    std::vector<StagingRing::Job> jobs;
    for (std::size_t i = 0; i < claimed_.size(); ++i) {
      Stash* stash = stash_[i].get();
      if (stash == nullptr) continue;
      const Region& r = *claimed_[i];
      jobs.push_back({r.ctx, r.va, stash->bytes(),
                      [stash, progress = &parts_.progress](std::size_t off, char* data,
                                                           std::size_t n, std::string* error) {
                        if (!stash->put(off, data, n, error)) return false;
                        progress->add(n);
                        return true;
                      }});
    }
    if (jobs.empty() || copy_rc_ != kDrvOk || !host_error_.empty()) return;
    if (parts_.tiers.staging().to_host(jobs, &stage_error_)) {
      for (std::size_t i = 0; i < claimed_.size(); ++i)
        queued_[i] = queued_[i] || stash_[i] != nullptr;
    } else {
      GS_WARN("sleep: %s; nothing is put to sleep", stage_error_.c_str());
    }
  }

  // Whether region `i` keeps its contents (in a mirror or a stash) across the sleep.
  bool keeps(std::size_t i) const { return policy_[i] != Policy::kDiscard; }

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
      // A stash counted its pieces as they moved; its region counts the rest of its mapping now.
      const std::size_t counted = stash_[i] ? std::min(r.mapped, stash_[i]->bytes()) : 0;
      parts_.progress.add(r.mapped - counted);
      slept_.push_back(claimed_[i]);
      slept_policy_.push_back(policy_[i]);
      slept_stash_.push_back(std::move(stash_[i]));
    }
    unmap_seconds_ += monotonic_seconds() - u;
  }

  // Releases each region as soon as its copies have landed, while later copies still run: a
  // thousand unmaps and releases cost tens of milliseconds that would otherwise follow the copies.
  // If a mirror or a copy could not even be queued, nothing is released. Otherwise discard regions
  // go first, overlapping the copies; a region whose copy fails on the device stays awake and
  // intact, and so do all after it.
  void release() {
    bool stopped = copy_rc_ != kDrvOk || !host_error_.empty() || !stage_error_.empty();
    for (std::size_t i = 0; i < claimed_.size(); ++i) {
      if (keeps(i)) continue;
      if (stopped) {
        kept_.push_back(claimed_[i]);
      } else {
        release_one(i);
      }
    }
    for (std::size_t i = 0; i < claimed_.size(); ++i) {
      if (!keeps(i)) continue;
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
      for (std::size_t i = 0; i < slept_.size(); ++i) {
        slept_[i]->slept_policy = slept_policy_[i];
        slept_[i]->stash = std::move(slept_stash_[i]);
      }
    });
    // Report before settling: once settled, a free on another thread may take a region apart.
    result_.tags = tag_reports(slept_, slept_policy_);
    for (std::size_t i = 0; i < slept_.size(); ++i) {
      result_.regions += 1;
      result_.bytes += slept_[i]->mapped;
      const Stash* stash = slept_[i]->stash.get();
      if (slept_policy_[i] == Policy::kDiscard) {
        result_.discarded_bytes += slept_[i]->mapped;
      } else {
        result_.copied_bytes += mirror_size(slept_[i]->size);
      }
      if (stash != nullptr) {
        (stash->tier() == Stash::Tier::kDisk ? result_.spilled_bytes : result_.pageable_bytes) +=
            stash->bytes();
      }
    }
    parts_.table.settle(slept_, RegionState::kAsleep);
    parts_.table.settle(kept_, RegionState::kAwake);
    result_.seconds = elapsed();
    parts_.tags.record_sleep(result_.tags, result_.seconds * 1e3);
    const std::string stay_awake = std::to_string(kept_.size()) + " regions stay awake";
    if (!host_error_.empty()) {
      result_.fail(Failure::kHostOutOfMemory, "host mirror: " + host_error_ + "; " + stay_awake);
    } else if (!stage_error_.empty()) {
      result_.fail(Failure::kHostOutOfMemory, stage_error_ + "; " + stay_awake);
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
  std::string stage_error_;  // the staging ring's failure (a spill write that found no room)
  std::vector<std::unique_ptr<Stash>> stash_;  // per claimed region: its tier past the mirror
  DrvStatus copy_rc_ = kDrvOk;
  std::vector<std::shared_ptr<Region>> slept_;
  std::vector<Policy> slept_policy_;
  std::vector<std::unique_ptr<Stash>> slept_stash_;
  std::vector<std::shared_ptr<Region>> kept_;
  double unmap_seconds_ = 0;
};

}  // namespace

OpResult sleep_tags(EngineParts& parts, const SleepRequest& request) {
  SleepOperation op(parts, request);
  return op.run();
}

}  // namespace gpusleep

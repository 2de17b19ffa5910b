// Wake, as its named phases: claim the regions, plan (largest first, the peers to grant), create
// and map their memory while restoring the contents, then either roll everything back or commit
// and report.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/clock.h"
#include "base/log.h"
#include "core/engine_parts.h"
#include "core/handle_maker.h"
#include "core/operation.h"

namespace gpusleep {
namespace {

// A wake of at least this many regions creates their memory on a helper thread.
constexpr std::size_t kThreadedCreateMin = 8;
// How often a waiting wake looks at the device's free memory: a region's release shows there
// within tens of microseconds, and a look costs a few.
constexpr auto kMemoryPoll = std::chrono::microseconds(200);
// Restores from mirrors are marked every 1/64 of the wake's bytes, from 64 MiB to 1 GiB, so that
// status can count them done as they land; a mark costs an event per stream.
constexpr std::size_t kMinProgressStep = std::size_t{64} << 20;
constexpr std::size_t kMaxProgressStep = std::size_t{1} << 30;

class WakeOperation : public Operation {
 public:
  WakeOperation(EngineParts& parts, const WakeRequest& request)
      : Operation(parts, "wake"), request_(request) {}

  OpResult run() {
    if (!claim(request_.tags, RegionState::kAsleep, RegionState::kWaking)) {
      return std::move(result_);
    }
    plan();
    if (map_and_restore()) {
      commit();
      report();
    } else {
      roll_back();
    }
    return std::move(result_);
  }

 private:
  // Largest first: the copy engines start on the big restores at once, and the many small
  // regions are mapped while those run, so mapping them never leaves the engines idle. The peers
  // to grant are read once (grant_peer waits for the operation lock, so they hold still).
  void plan() {
    std::stable_sort(claimed_.begin(), claimed_.end(),
                     [](const auto& a, const auto& b) { return a->mapped > b->mapped; });
    mapped_.assign(claimed_.size(), false);
    progress_step_ = std::clamp(claimed_bytes_ / 64, kMinProgressStep, kMaxProgressStep);
    std::unique_lock<std::mutex> lock = parts_.peers.lock();
    for (const auto& r : claimed_)
      accessors_.emplace(r->device, parts_.peers.accessors_of(r->device));
  }

  // Maps region `r`'s new memory with the access it had.
  DrvStatus map_one(std::size_t i, PhysHandle handle) {
    Driver& driver = parts_.driver;
    Region& r = *claimed_[i];
    driver.set_context(r.ctx);
    DrvStatus rc = driver.map(r.va, r.mapped, handle);
    if (rc != kDrvOk) return rc;
    mapped_[i] = true;
    if (r.adopted != nullptr) {  // the access the program granted, as it granted it
      for (const auto& [device, flags] : r.adopted->access) {
        if (rc == kDrvOk) rc = driver.set_access_flags(r.va, r.mapped, device, flags);
      }
    } else {
      rc = driver.set_access(r.va, r.mapped, r.device);
    }
    if (rc == kDrvOk) grant_accessors(driver, r.va, r.mapped, accessors_[r.device]);
    return rc;
  }

  // Creates region i's physical memory as it had it.
  DrvStatus create_one(const Region& r, PhysHandle* handle) {
    Driver& driver = parts_.driver;
    driver.set_context(r.ctx);
    return r.adopted != nullptr ? driver.create_like(r.adopted->prop.data(), r.adopted->prop.size(),
                                                     r.mapped, handle)
                                : driver.create(r.device, r.mapped, handle);
  }

  // create_one(), and for a wake that may wait, again each time the device's free memory could
  // hold the region, until the deadline or until the wake is abandoned. Runs on the creating
  // thread (the helper's, or this one's); waited_seconds_ is read after it has stopped.
  DrvStatus create_waiting(std::size_t i, PhysHandle* handle) {
    const Region& r = *claimed_[i];
    DrvStatus rc = create_one(r, handle);
    if (rc != kDrvOutOfMemory || request_.wait_seconds <= 0) return rc;
    const double deadline = std::min(request_.wait_seconds, kMaxWakeWaitSeconds);
    const double start = elapsed();
    parts_.progress.set_waiting(true);
    while (rc == kDrvOutOfMemory && !abandoned_.load(std::memory_order_relaxed) &&
           elapsed() < deadline) {
      std::size_t free_bytes = 0;
      std::size_t total = 0;
      if (parts_.driver.memory_info(r.device, &free_bytes, &total) != kDrvOk ||
          free_bytes >= r.mapped) {
        rc = create_one(r, handle);
        if (rc != kDrvOutOfMemory) break;
      }
      std::this_thread::sleep_for(kMemoryPoll);
    }
    parts_.progress.set_waiting(false);
    waited_seconds_ += elapsed() - start;
    return rc;
  }

  // Physical memory is created region by region on a helper thread, while this thread maps each
  // region as its memory arrives and queues its restore: creation overlaps mapping, and the copy
  // engines move one region while the next is mapped. False on any failure, after the queued
  // copies have finished.
  bool map_and_restore() {
    Driver& driver = parts_.driver;
    const std::size_t n = claimed_.size();
    HandleMaker maker(
        n, n >= kThreadedCreateMin,
        [this](std::size_t i, PhysHandle* handle) { return create_waiting(i, handle); },
        [&driver] { driver.relax_capture_mode(); });
    const double t = monotonic_seconds();
    double map_seconds = 0;
    for (std::size_t i = 0; i < n && map_rc_ == kDrvOk && copy_rc_ == kDrvOk; ++i) {
      Region& r = *claimed_[i];
      const double u = monotonic_seconds();
      PhysHandle handle = 0;
      create_rc_ = maker.get(i, &handle, &create_failed_);
      if (create_rc_ != kDrvOk) {
        map_seconds += monotonic_seconds() - u;
        break;
      }
      map_rc_ = map_one(i, handle);
      map_seconds += monotonic_seconds() - u;
      if (map_rc_ != kDrvOk) continue;
      if (r.slept_policy == Policy::kDiscard) {
        parts_.progress.add(r.mapped);
        continue;
      }
      if (Stash* stash = r.stash.get()) {
        staged_.push_back({r.ctx, r.va, stash->bytes(),
                           [stash, progress = &parts_.progress](std::size_t off, char* data,
                                                                std::size_t n, std::string* e) {
                             if (!stash->get(off, data, n, e)) return false;
                             progress->add(n);
                             return true;
                           }});
        continue;
      }
      if (r.mirror == nullptr) {  // nothing to restore
        parts_.progress.add(r.mapped);
        continue;
      }
      Mirror& m = *r.mirror;
      for (std::size_t p = 0; p < m.piece_count() && copy_rc_ == kDrvOk; ++p) {
        std::size_t off = m.piece_offset(p);
        copy_rc_ = parts_.copier.issue(r.ctx, Direction::kToDevice, m.at(off), r.va + off,
                                       m.piece_size(p));
      }
      if (copy_rc_ == kDrvOk) mark_progress(r.mapped);
    }
    abandoned_.store(true, std::memory_order_relaxed);  // a create still waiting gives up
    maker.stop();
    result_.wait_seconds = waited_seconds_;
    handles_ = maker.handles();  // every handle made, ours to release
    // Contents kept past the mirrors come back through the staging ring, while the mirror
    // restores run.
    if (create_rc_ == kDrvOk && map_rc_ == kDrvOk && copy_rc_ == kDrvOk && !staged_.empty() &&
        !parts_.tiers.staging().to_device(staged_, &stage_error_)) {
      GS_WARN("wake: %s; nothing is woken", stage_error_.c_str());
    }
    count_progress();
    DrvStatus wait_rc = parts_.copier.wait();
    if (copy_rc_ == kDrvOk) copy_rc_ = wait_rc;
    if (create_rc_ != kDrvOk || map_rc_ != kDrvOk || copy_rc_ != kDrvOk || !stage_error_.empty()) {
      return false;
    }
    // What no mark covered, and the rest of each staged region's mapping past its contents.
    std::size_t rest = unmarked_bytes_;
    for (const auto& r : claimed_) {
      if (r->slept_policy != Policy::kDiscard && r->stash != nullptr) {
        rest += r->mapped - std::min(r->mapped, r->stash->bytes());
      }
    }
    parts_.progress.add(rest);
    result_.map_seconds = map_seconds;
    result_.copy_seconds = monotonic_seconds() - t - map_seconds;
    return true;
  }

  // Notes `bytes` of restores queued, and marks the copies every progress_step_ bytes.
  void mark_progress(std::size_t bytes) {
    unmarked_bytes_ += bytes;
    if (unmarked_bytes_ < progress_step_) return;
    Copier::Fence fence;
    if (parts_.copier.fence(&fence) != kDrvOk) {
      parts_.copier.drop(&fence);  // no mark: these bytes count when the next one lands
      return;
    }
    marks_.emplace_back(std::move(fence), unmarked_bytes_);
    unmarked_bytes_ = 0;
  }

  // Waits for the marks in order, counting their bytes done as each lands; after a failure
  // anywhere, drops them (the wake is rolled back).
  void count_progress() {
    for (auto& [fence, bytes] : marks_) {
      const bool going =
          create_rc_ == kDrvOk && map_rc_ == kDrvOk && copy_rc_ == kDrvOk && stage_error_.empty();
      if (!going) {
        parts_.copier.drop(&fence);
        continue;
      }
      copy_rc_ = parts_.copier.wait(&fence);
      if (copy_rc_ == kDrvOk) parts_.progress.add(bytes);
    }
    marks_.clear();
  }

  // A wake that cannot get all its memory changes nothing: every mapping and handle goes, the
  // regions stay asleep with their mirrors, and the error says what was missing.
  void roll_back() {
    Driver& driver = parts_.driver;
    for (std::size_t i = 0; i < claimed_.size(); ++i) {
      const Region& r = *claimed_[i];
      if (mapped_[i]) {
        if (DrvStatus rc = driver.unmap(r.va, r.mapped)) {
          GS_ERROR("rollback: unmap of region %llu failed: %s",
                   static_cast<unsigned long long>(r.id), driver.describe(rc).c_str());
        }
      }
      if (handles_[i] != 0) driver.release(handles_[i]);
    }
    parts_.table.settle(claimed_, RegionState::kAsleep);
    if (create_rc_ == kDrvOutOfMemory) {
      const Region& r = *claimed_[create_failed_];
      std::size_t needed = 0;
      for (const auto& c : claimed_)
        needed += c->device == r.device ? c->mapped : 0;
      std::size_t free_bytes = 0;
      std::size_t total = 0;
      driver.memory_info(r.device, &free_bytes, &total);
      result_.fail(Failure::kOutOfMemory,
                   "wake needs " + format_bytes(needed) + " on device " + std::to_string(r.device) +
                       "; " + format_bytes(free_bytes) + " is free" + waited_text() +
                       ". Nothing was woken; try again once memory is free");
      result_.error.device = r.device;
      result_.error.needed_bytes = needed;
      result_.error.free_bytes = free_bytes;
      return;
    }
    if (!stage_error_.empty()) {
      result_.fail(Failure::kDriverError, stage_error_ + ". Nothing was woken");
      return;
    }
    result_.fail(
        Failure::kDriverError,
        (create_rc_ != kDrvOk ? "cannot create device memory: " + driver.describe(create_rc_)
         : map_rc_ != kDrvOk  ? "cannot map device memory: " + driver.describe(map_rc_)
                              : "copy to device failed: " + driver.describe(copy_rc_)) +
            ". Nothing was woken");
  }

  std::string waited_text() const {
    if (request_.wait_seconds <= 0) return "";
    char buf[64];
    std::snprintf(buf, sizeof buf, " after waiting %.1f s", result_.wait_seconds);
    return buf;
  }

  // Every region takes its new handle and settles awake; mirrors go unless they are kept.
  void commit() {
    std::vector<Policy> policies(claimed_.size());
    for (std::size_t i = 0; i < claimed_.size(); ++i) {
      Region& r = *claimed_[i];
      r.handle = handles_[i];
      // A handle the program released lives on its mapping alone, as before the sleep.
      if (r.adopted != nullptr && r.adopted->refs <= 0) parts_.driver.release(r.handle);
      policies[i] = r.slept_policy;
      result_.regions += 1;
      result_.bytes += r.mapped;
      if (r.slept_policy != Policy::kDiscard) {
        result_.copied_bytes += mirror_size(r.size);
      } else {
        result_.discarded_bytes += r.mapped;
      }
    }
    // Pageable copies are freed and spilled ranges given back to the disk (Stash's destructor).
    std::vector<std::shared_ptr<Stash>> stashes;
    parts_.table.update([&] {
      for (const auto& r : claimed_) {
        if (r->stash) stashes.push_back(std::move(r->stash));
      }
    });
    std::vector<std::shared_ptr<Mirror>> dropped;
    if (!parts_.options.keep_mirrors) {
      parts_.table.update([&] {
        for (const auto& r : claimed_) {
          if (r->mirror) dropped.push_back(std::move(r->mirror));
        }
      });
    }
    result_.tags = tag_reports(claimed_, policies);  // before settling, as in sleep
    parts_.table.settle(claimed_, RegionState::kAwake);
    for (auto& m : dropped)
      parts_.preparer.release(std::move(m));
  }

  void report() {
    result_.seconds = elapsed();
    parts_.tags.record_wake(result_.tags, result_.seconds * 1e3);
    GS_INFO("woke %zu regions, %s in %.1f ms", result_.regions, format_bytes(result_.bytes).c_str(),
            result_.seconds * 1e3);
  }

  const WakeRequest& request_;
  std::vector<bool> mapped_;                   // per claimed region
  std::map<int, std::vector<int>> accessors_;  // device -> devices granted access to it
  std::vector<PhysHandle> handles_;            // per claimed region: its new memory (0: none)
  DrvStatus create_rc_ = kDrvOk;
  std::size_t create_failed_ = 0;       // the region whose memory could not be created
  std::atomic<bool> abandoned_{false};  // set once mapping ends: creates stop waiting
  double waited_seconds_ = 0;           // by the creating thread, waiting for memory
  DrvStatus map_rc_ = kDrvOk;
  DrvStatus copy_rc_ = kDrvOk;
  std::vector<StagingRing::Job> staged_;                      // restores through the staging ring
  std::vector<std::pair<Copier::Fence, std::size_t>> marks_;  // progress marks, with their bytes
  std::size_t unmarked_bytes_ = 0;
  std::size_t progress_step_ = kMaxProgressStep;
  std::string stage_error_;
};

}  // namespace

OpResult wake_tags(EngineParts& parts, const WakeRequest& request) {
  WakeOperation op(parts, request);
  return op.run();
}

}  // namespace gpusleep

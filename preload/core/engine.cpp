// The engine. Locks: the table's lock guards region state (held briefly); op_mu_ serializes sleep
// and wake and is held across their copies, but allocation and free never take it, so the host's
// threads keep allocating while a controller moves other tags.
#include "core/engine.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "core/handle_maker.h"
#include "base/log.h"
#include "base/units.h"

namespace gpusleep {
namespace {

constexpr std::size_t kSleepHostReserve = std::size_t{1} << 30;  // host memory a sleep leaves
constexpr int kBackgroundPrepThreads = 4;
// Background preparation starts this long after an allocation: allocations freed sooner (scratch
// buffers, allocation benchmarks) are never pinned.
constexpr std::chrono::milliseconds kBackgroundDelay{1000};
// A wake of at least this many regions creates their memory on a helper thread.
constexpr std::size_t kThreadedCreateMin = 8;

int choose_prep_threads(int configured) {
  if (configured > 0) return configured;
  int cpus = static_cast<int>(std::thread::hardware_concurrency());
  return std::clamp(cpus / 2, 2, 16);
}

std::size_t round_up(std::size_t n, std::size_t to) {
  return (n + to - 1) / to * to;
}

// A mirror holds the bytes the caller asked for (in whole host pages), not the granularity's
// rounding: nothing may be read past the requested size.
std::size_t mirror_size(std::size_t region_size) {
  return round_up(region_size, 4096);
}

// Runs `fn` on scope exit.
template <typename Fn>
class OnExit {
 public:
  explicit OnExit(Fn fn) : fn_(std::move(fn)) {}
  ~OnExit() { fn_(); }
  OnExit(const OnExit&) = delete;
  OnExit& operator=(const OnExit&) = delete;

 private:
  Fn fn_;
};

// Restores the calling thread's context on scope exit (frees run on the host's threads).
class ContextRestorer {
 public:
  explicit ContextRestorer(Driver& driver) : driver_(driver) {
    ok_ = driver_.current_context(&saved_) == kDrvOk;
  }
  ~ContextRestorer() {
    if (ok_) driver_.set_context(saved_);
  }

 private:
  Driver& driver_;
  Context saved_ = nullptr;
  bool ok_ = false;
};

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

}  // namespace

Engine::Engine(Driver& driver, const Options& options, Gate* gate)
    : driver_(driver),
      options_(options),
      gate_(gate),
      tagger_(options.default_tag),
      preparer_(choose_prep_threads(options.prep_threads), kBackgroundPrepThreads, kBackgroundDelay,
                [this] { driver_.relax_capture_mode(); }),
      copier_(driver, options.copy_streams, options.copy_chunk) {
  for (const auto& [tag, policy] : options.policies)
    policies_.set(tag, policy);
  known_tags_.insert(options.default_tag);
}

Engine::~Engine() {
  for (const RegionInfo& r : table_.snapshot()) {
    if (!r.adopted) free(r.va);
  }
}

void Engine::open_gate_if_all_awake() {
  if (gate_ == nullptr || !gate_->closed()) return;
  table_.update([&] {
    bool all_awake = true;
    table_.for_each_locked(
        [&](Region& r) { all_awake = all_awake && (r.state == RegionState::kAwake || !r.gated); });
    if (all_awake) gate_->open();
  });
}

void Engine::relax_this_thread() {
  thread_local bool relaxed = false;
  if (!relaxed) relaxed = driver_.relax_capture_mode() == kDrvOk;
}

bool Engine::device_info(int device, DeviceInfo* info) {
  if (device < 0 || device >= kMaxDevices) return false;
  std::lock_guard<std::mutex> lock(devices_mu_);
  DeviceInfo& d = devices_[device];
  if (!d.checked) {
    d.checked = true;
    bool vmm = false;
    std::size_t gran = 0;
    if (driver_.vmm_supported(device, &vmm) == kDrvOk && vmm &&
        driver_.granularity(device, &gran) == kDrvOk && gran > 0) {
      d.vmm = true;
      d.granularity = gran;
      used_devices_.insert(device);
    } else {
      GS_WARN("device %d does not support virtual memory management; its allocations pass through",
              device);
    }
  }
  *info = d;
  return true;
}

AllocOutcome Engine::allocate(std::size_t size, int device, std::uintptr_t call_site,
                              DevicePtr* out, SiteContext* site) {
  DeviceInfo info;
  if (options_.disable || size == 0 || !device_info(device, &info) || !info.vmm) {
    return AllocOutcome::kPassthrough;
  }
  Context ctx = nullptr;
  if (DrvStatus rc = driver_.ensure_context(device, &ctx)) {
    GS_WARN("no context for device %d (%s); allocation passes through", device,
            driver_.describe(rc).c_str());
    return AllocOutcome::kPassthrough;
  }
  const std::uint64_t id = next_id_++;
  TagDecision decision = tagger_.decide(AllocationSite{size, device, id, call_site}, site);
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
  DrvStatus rc = driver_.reserve(mapped, info.granularity, &va);
  if (rc == kDrvOk) {
    step = "create";
    rc = driver_.create(device, mapped, &handle);
    if (rc == kDrvOk) {
      step = "map";
      rc = driver_.map(va, mapped, handle);
      if (rc == kDrvOk) {
        step = "set access";
        rc = driver_.set_access(va, mapped, device);
        if (rc != kDrvOk) driver_.unmap(va, mapped);
      }
      if (rc != kDrvOk) driver_.release(handle);
    }
    if (rc != kDrvOk) driver_.unreserve(va, mapped);
  }
  if (rc == kDrvOutOfMemory) return AllocOutcome::kOutOfMemory;
  if (rc != kDrvOk) {
    GS_WARN("%s of %zu bytes on device %d failed (%s); allocation passes through", step, mapped,
            device, driver_.describe(rc).c_str());
    return AllocOutcome::kPassthrough;
  }

  std::unique_lock<std::mutex> peers_lock(peers_mu_);
  grant_accessors(va, mapped, accessors_of(device));

  auto region = std::make_shared<Region>();
  region->id = id;
  region->va = va;
  region->size = size;
  region->mapped = mapped;
  region->device = device;
  region->ctx = ctx;
  region->call_site = call_site;
  region->site = site != nullptr ? site->call_site() : nullptr;
  region->rule = decision.rule;
  region->created_at = wall_seconds();
  region->tag = decision.tag;
  region->handle = handle;
  const bool offload = policies_.for_tag(decision.tag) == Policy::kOffload;
  if (offload) region->mirror = std::make_shared<Mirror>(driver_, mirror_size(region->size), ctx);
  {
    std::lock_guard<std::mutex> lock(meta_mu_);
    known_tags_.insert(decision.tag);
  }
  std::shared_ptr<Mirror> mirror = region->mirror;
  table_.insert(std::move(region));
  peers_lock.unlock();
  if (offload && options_.eager_mirrors) preparer_.submit(mirror, false);
  GS_DEBUG("region %llu: %zu bytes at 0x%llx on device %d, tag %s",
           static_cast<unsigned long long>(id), size, static_cast<unsigned long long>(va), device,
           decision.tag.c_str());
  *out = va;
  return AllocOutcome::kManaged;
}

FreeOutcome Engine::free(DevicePtr va) {
  std::shared_ptr<Region> existing = table_.find(va);
  if (existing == nullptr || existing->adopted != nullptr) return FreeOutcome::kNotOurs;
  std::shared_ptr<Region> region = table_.remove_when_idle(va);
  if (region == nullptr) return FreeOutcome::kNotOurs;
  ContextRestorer restore(driver_);
  DrvStatus rc = kDrvOk;
  if (region->state == RegionState::kAwake) {
    // Like cudaFree: work still running on the memory must finish before it goes.
    rc = driver_.synchronize(region->ctx);
    if (rc != kDrvOk) GS_WARN("free: synchronize failed: %s", driver_.describe(rc).c_str());
    rc = driver_.unmap(region->va, region->mapped);
    if (rc == kDrvOk) rc = driver_.release(region->handle);
  } else {
    rc = driver_.set_context(region->ctx);
  }
  if (rc == kDrvOk) rc = driver_.unreserve(region->va, region->mapped);
  if (rc != kDrvOk) {
    GS_ERROR("free of region %llu at 0x%llx: %s", static_cast<unsigned long long>(region->id),
             static_cast<unsigned long long>(va), driver_.describe(rc).c_str());
  }
  preparer_.release(std::move(region->mirror));  // unpinning is slow: not on the caller's time
  if (region->state != RegionState::kAwake) open_gate_if_all_awake();
  return FreeOutcome::kFreed;
}

void Engine::note_passthrough(DevicePtr ptr, std::size_t size) {
  note_foreign(ForeignKind::kPassthrough, ptr, size);
}

bool Engine::forget_passthrough(DevicePtr ptr) {
  return forget_foreign(ForeignKind::kPassthrough, ptr);
}

void Engine::set_rules(std::shared_ptr<const RuleSet> rules) {
  if (rules != nullptr) {
    std::lock_guard<std::mutex> lock(meta_mu_);
    for (const Rule& r : rules->rules()) {
      if (r.policy) policies_.set(r.tag, *r.policy);
      if (!r.tag.empty()) known_tags_.insert(r.tag);
    }
  }
  tagger_.set_rules(std::move(rules));
}

std::pair<std::size_t, std::size_t> Engine::retag(
    const std::function<bool(const RegionInfo&)>& select, const std::string& tag) {
  std::lock_guard<std::mutex> op(op_mu_);  // no region changes hands meanwhile
  std::vector<RegionInfo> infos = table_.snapshot();
  std::set<std::uint64_t> ids;
  std::size_t bytes = 0;
  for (const RegionInfo& info : infos) {
    if (select(info)) {
      ids.insert(info.id);
      bytes += info.mapped;
    }
  }
  table_.update([&] {
    table_.for_each_locked([&](Region& r) {
      if (ids.count(r.id)) r.tag = tag;
    });
  });
  {
    std::lock_guard<std::mutex> lock(meta_mu_);
    known_tags_.insert(tag);
  }
  return {ids.size(), bytes};
}

bool Engine::set_phase_tag(const std::string& tag) {
  if (!tag.empty() && !valid_tag_name(tag)) return false;
  tagger_.set_phase_tag(tag);
  if (!tag.empty()) {
    std::lock_guard<std::mutex> lock(meta_mu_);
    known_tags_.insert(tag);
  }
  return true;
}

void Engine::fail(OpResult* result, std::string code, std::string message) {
  result->ok = false;
  result->error.code = std::move(code);
  result->error.message = std::move(message);
}

bool Engine::resolve_tags(const std::vector<std::string>& requested, std::set<std::string>* tags,
                          OpResult* result) {
  std::lock_guard<std::mutex> lock(meta_mu_);
  if (requested.empty()) {
    *tags = known_tags_;
    return true;
  }
  std::vector<std::string> unknown;
  for (const std::string& tag : requested) {
    if (!valid_tag_name(tag)) {
      fail(result, "invalid_argument", "invalid tag name '" + tag.substr(0, 80) + "'");
      return false;
    }
    if (known_tags_.count(tag) == 0) unknown.push_back(tag);
    tags->insert(tag);
  }
  if (!unknown.empty()) {
    std::string message = "unknown tag";
    message += unknown.size() > 1 ? "s" : "";
    for (std::size_t i = 0; i < unknown.size(); ++i)
      message += (i ? ", '" : " '") + unknown[i] + "'";
    message += " (known:";
    for (const std::string& t : known_tags_)
      message += " " + t;
    message += ")";
    fail(result, "unknown_tag", message);
    return false;
  }
  return true;
}

void Engine::report_noop(const std::set<std::string>& tags,
                         const std::vector<std::shared_ptr<Region>>& claimed, OpResult* result) {
  std::set<std::string> acted;
  for (const auto& r : claimed)
    acted.insert(r->tag);
  for (const std::string& t : tags) {
    if (acted.count(t) == 0) result->noop.push_back(t);
  }
}

void Engine::release_handles(const std::vector<std::shared_ptr<Region>>& regions,
                             const std::vector<PhysHandle>& handles,
                             const std::vector<bool>& mapped) {
  for (std::size_t i = 0; i < regions.size(); ++i) {
    if (mapped[i]) {
      if (DrvStatus rc = driver_.unmap(regions[i]->va, regions[i]->mapped)) {
        GS_ERROR("rollback: unmap of region %llu failed: %s",
                 static_cast<unsigned long long>(regions[i]->id), driver_.describe(rc).c_str());
      }
    }
    if (handles[i] != 0) driver_.release(handles[i]);
  }
}

OpResult Engine::sleep(const SleepRequest& request) {
  relax_this_thread();
  std::lock_guard<std::mutex> op(op_mu_);
  OnExit refresh_gate([this] { open_gate_if_all_awake(); });
  const double t0 = monotonic_seconds();
  OpResult result;
  std::set<std::string> tags;
  if (!resolve_tags(request.tags, &tags, &result)) return result;
  auto claimed = table_.claim([&](const Region& r) { return tags.count(r.tag) > 0; },
                              RegionState::kAwake, RegionState::kSleeping);
  report_noop(tags, claimed, &result);
  if (claimed.empty()) {
    result.seconds = monotonic_seconds() - t0;
    return result;
  }

  // Policies, and the host memory the mirrors still need.
  std::vector<Policy> policy(claimed.size());
  std::size_t host_needed = 0;
  for (std::size_t i = 0; i < claimed.size(); ++i) {
    Region& r = *claimed[i];
    policy[i] = request.policy.value_or(policies_.for_tag(r.tag));
    if (policy[i] != Policy::kOffload) continue;
    if (r.mirror == nullptr) {
      auto mirror = std::make_shared<Mirror>(driver_, mirror_size(r.size), r.ctx);
      table_.update([&] { r.mirror = std::move(mirror); });
    }
    host_needed += r.mirror->bytes() - r.mirror->prepared_bytes();
  }
  if (host_needed > 0) {
    std::size_t available = host_available_bytes();
    if (available < kSleepHostReserve || host_needed > available - kSleepHostReserve) {
      table_.settle(claimed, RegionState::kAwake);
      fail(&result, "host_out_of_memory",
           "host mirrors need " + format_bytes(host_needed) + " more; " + format_bytes(available) +
               " of host memory is available (" + format_bytes(kSleepHostReserve) +
               " is kept for the host)");
      result.error.needed_bytes = host_needed;
      result.error.free_bytes = available;
      return result;
    }
    // Start pinning now so it overlaps the synchronization and the first copies.
    for (std::size_t i = 0; i < claimed.size(); ++i) {
      if (policy[i] == Policy::kOffload) preparer_.submit(claimed[i]->mirror, true);
    }
  }

  // Close the gate: from here the program's GPU calls wait (gate.h). Then quiesce: a kernel still
  // running on memory about to be unmapped would fault the context.
  double t = monotonic_seconds();
  table_.update([&] {
    for (const auto& r : claimed)
      r->gated = request.gate;
  });
  if (gate_ != nullptr && request.gate) {
    std::string busy;
    if (!gate_->close(std::chrono::milliseconds(options_.gate_drain_ms), &busy)) {
      table_.settle(claimed, RegionState::kAwake);
      fail(&result, "gpu_busy",
           "a thread of the process stayed inside " + busy + " for " +
               std::to_string(options_.gate_drain_ms) +
               " ms (GPUSLEEP_GATE_DRAIN_MS); nothing was put to sleep");
      return result;
    }
  }
  std::set<Context> contexts;
  for (const auto& r : claimed)
    contexts.insert(r->ctx);
  for (Context ctx : contexts) {
    if (DrvStatus rc = driver_.synchronize(ctx)) {
      table_.settle(claimed, RegionState::kAwake);
      fail(&result, "driver_error", "device did not synchronize: " + driver_.describe(rc));
      return result;
    }
  }
  result.sync_seconds = monotonic_seconds() - t;

  // Copy out, piece by piece as mirrors become ready, with a fence after each region. Then
  // release each region as soon as its copies have landed, while later copies still run: a
  // thousand unmaps and releases cost tens of milliseconds that would otherwise follow the copies.
  t = monotonic_seconds();
  std::vector<Copier::Fence> fences(claimed.size());
  std::vector<char> queued(claimed.size(), 0);
  std::string host_error;
  DrvStatus rc = kDrvOk;
  for (std::size_t i = 0; i < claimed.size() && rc == kDrvOk && host_error.empty(); ++i) {
    if (policy[i] != Policy::kOffload) continue;
    Region& r = *claimed[i];
    Mirror& m = *r.mirror;
    bool complete = true;
    for (std::size_t p = 0; p < m.piece_count() && rc == kDrvOk; ++p) {
      if (!m.ensure_piece(p, &host_error)) {
        complete = false;
        break;
      }
      std::size_t off = m.piece_offset(p);
      rc = copier_.issue(r.ctx, Direction::kToHost, m.at(off), r.va + off, m.piece_size(p));
    }
    if (complete && rc == kDrvOk) rc = copier_.fence(&fences[i]);
    queued[i] = complete && rc == kDrvOk;
  }
  DrvStatus copy_rc = rc;

  std::vector<std::shared_ptr<Region>> slept;
  std::vector<std::shared_ptr<Region>> kept;
  std::vector<Policy> slept_policy;
  double unmap_seconds = 0;
  auto release = [&](std::size_t i) {
    Region& r = *claimed[i];
    const double u = monotonic_seconds();
    driver_.set_context(r.ctx);
    DrvStatus urc = driver_.unmap(r.va, r.mapped);
    if (urc != kDrvOk) {
      GS_ERROR("sleep: unmap of region %llu failed: %s; it stays awake",
               static_cast<unsigned long long>(r.id), driver_.describe(urc).c_str());
      kept.push_back(claimed[i]);
    } else {
      // A handle the program released lives on its mapping alone: unmapping freed it.
      const bool holds_ref = r.adopted == nullptr || r.adopted->refs > 0;
      if (DrvStatus rrc = holds_ref ? driver_.release(r.handle) : kDrvOk) {
        GS_ERROR("sleep: release of region %llu failed: %s", static_cast<unsigned long long>(r.id),
                 driver_.describe(rrc).c_str());
      }
      r.handle = 0;
      slept.push_back(claimed[i]);
      slept_policy.push_back(policy[i]);
    }
    unmap_seconds += monotonic_seconds() - u;
  };
  // If a mirror or a copy could not even be queued, nothing is released. Otherwise discard
  // regions go first, overlapping the copies; a region whose copy fails on the device stays awake
  // and intact, and so do all after it.
  bool stopped = copy_rc != kDrvOk || !host_error.empty();
  for (std::size_t i = 0; i < claimed.size(); ++i) {
    if (policy[i] == Policy::kOffload) continue;
    if (stopped) {
      kept.push_back(claimed[i]);
    } else {
      release(i);
    }
  }
  for (std::size_t i = 0; i < claimed.size(); ++i) {
    if (policy[i] != Policy::kOffload) continue;
    if (!queued[i] || stopped) {
      copier_.drop(&fences[i]);
      kept.push_back(claimed[i]);
      continue;
    }
    if (DrvStatus wrc = copier_.wait(&fences[i])) {
      copy_rc = wrc;
      stopped = true;
      kept.push_back(claimed[i]);
      continue;
    }
    release(i);
  }
  DrvStatus tail_rc = copier_.wait();
  if (copy_rc == kDrvOk) copy_rc = tail_rc;
  result.copy_seconds = monotonic_seconds() - t - unmap_seconds;
  result.map_seconds = unmap_seconds;
  table_.update([&] {
    for (std::size_t i = 0; i < slept.size(); ++i)
      slept[i]->slept_policy = slept_policy[i];
  });
  // Report before settling: once settled, a free on another thread may take a region apart.
  result.tags = tag_reports(slept, slept_policy);
  for (std::size_t i = 0; i < slept.size(); ++i) {
    result.regions += 1;
    result.bytes += slept[i]->mapped;
    if (slept_policy[i] == Policy::kOffload) {
      result.copied_bytes += slept[i]->mirror->bytes();
    } else {
      result.discarded_bytes += slept[i]->mapped;
    }
  }
  table_.settle(slept, RegionState::kAsleep);
  table_.settle(kept, RegionState::kAwake);
  result.seconds = monotonic_seconds() - t0;
  {
    std::lock_guard<std::mutex> lock(meta_mu_);
    for (const TagReport& t : result.tags)
      tag_times_[t.tag].last_sleep_ms = result.seconds * 1e3;
  }
  if (!host_error.empty()) {
    fail(&result, "host_out_of_memory",
         "host mirror: " + host_error + "; " + std::to_string(kept.size()) + " regions stay awake");
  } else if (copy_rc != kDrvOk) {
    fail(&result, "driver_error",
         "copy to host failed: " + driver_.describe(copy_rc) + "; " + std::to_string(kept.size()) +
             " regions stay awake");
  } else if (!kept.empty()) {
    fail(&result, "driver_error",
         std::to_string(kept.size()) + " regions could not be unmapped and stay awake");
  }
  GS_INFO("slept %zu regions, %s in %.1f ms", result.regions, format_bytes(result.bytes).c_str(),
          result.seconds * 1e3);
  return result;
}

OpResult Engine::wake(const WakeRequest& request) {
  relax_this_thread();
  std::lock_guard<std::mutex> op(op_mu_);
  OnExit refresh_gate([this] { open_gate_if_all_awake(); });
  const double t0 = monotonic_seconds();
  OpResult result;
  std::set<std::string> tags;
  if (!resolve_tags(request.tags, &tags, &result)) return result;
  auto claimed = table_.claim([&](const Region& r) { return tags.count(r.tag) > 0; },
                              RegionState::kAsleep, RegionState::kWaking);
  report_noop(tags, claimed, &result);
  if (claimed.empty()) {
    result.seconds = monotonic_seconds() - t0;
    return result;
  }
  // Largest first: the copy engines start on the big restores at once, and the many small
  // regions are mapped while those run, so mapping them never leaves the engines idle.
  std::stable_sort(claimed.begin(), claimed.end(),
                   [](const auto& a, const auto& b) { return a->mapped > b->mapped; });
  const std::size_t n = claimed.size();
  std::vector<bool> mapped(n, false);

  // Peers to re-grant (grant_peer waits for op_mu_, so the set holds still until we are done).
  std::map<int, std::vector<int>> accessors;
  {
    std::lock_guard<std::mutex> lock(peers_mu_);
    for (const auto& r : claimed)
      accessors.emplace(r->device, accessors_of(r->device));
  }

  // Physical memory is created region by region on a helper thread, while this thread maps each
  // region as its memory arrives and queues its restore: creation overlaps mapping, and the copy
  // engines move one region while the next is mapped. Any failure waits for the queued copies,
  // then undoes everything: a wake that cannot get all its memory changes nothing.
  HandleMaker maker(
      n, n >= kThreadedCreateMin,
      [&](std::size_t i, PhysHandle* handle) {
        const Region& r = *claimed[i];
        driver_.set_context(r.ctx);
        return r.adopted != nullptr ? driver_.create_like(r.adopted->prop.data(),
                                                          r.adopted->prop.size(), r.mapped, handle)
                                    : driver_.create(r.device, r.mapped, handle);
      },
      [this] { driver_.relax_capture_mode(); });
  const double t = monotonic_seconds();
  double map_seconds = 0;
  DrvStatus create_rc = kDrvOk;
  std::size_t create_failed = 0;
  DrvStatus map_rc = kDrvOk;
  DrvStatus copy_rc = kDrvOk;
  for (std::size_t i = 0; i < n && map_rc == kDrvOk && copy_rc == kDrvOk; ++i) {
    Region& r = *claimed[i];
    const double u = monotonic_seconds();
    PhysHandle handle = 0;
    create_rc = maker.get(i, &handle, &create_failed);
    if (create_rc != kDrvOk) {
      map_seconds += monotonic_seconds() - u;
      break;
    }
    driver_.set_context(r.ctx);
    map_rc = driver_.map(r.va, r.mapped, handle);
    if (map_rc == kDrvOk) {
      mapped[i] = true;
      if (r.adopted != nullptr) {  // the access the program granted, as it granted it
        for (const auto& [device, flags] : r.adopted->access) {
          if (map_rc == kDrvOk) map_rc = driver_.set_access_flags(r.va, r.mapped, device, flags);
        }
      } else {
        map_rc = driver_.set_access(r.va, r.mapped, r.device);
      }
      if (map_rc == kDrvOk) grant_accessors(r.va, r.mapped, accessors[r.device]);
    }
    map_seconds += monotonic_seconds() - u;
    if (map_rc != kDrvOk || r.slept_policy != Policy::kOffload || r.mirror == nullptr) continue;
    Mirror& m = *r.mirror;
    for (std::size_t p = 0; p < m.piece_count() && copy_rc == kDrvOk; ++p) {
      std::size_t off = m.piece_offset(p);
      copy_rc = copier_.issue(r.ctx, Direction::kToDevice, m.at(off), r.va + off, m.piece_size(p));
    }
  }
  maker.stop();
  const std::vector<PhysHandle>& handles = maker.handles();  // every handle made, ours to release
  DrvStatus wait_rc = copier_.wait();
  if (copy_rc == kDrvOk) copy_rc = wait_rc;
  if (create_rc != kDrvOk || map_rc != kDrvOk || copy_rc != kDrvOk) {
    release_handles(claimed, handles, mapped);
    table_.settle(claimed, RegionState::kAsleep);
    if (create_rc == kDrvOutOfMemory) {
      const Region& r = *claimed[create_failed];
      std::size_t needed = 0;
      for (const auto& c : claimed)
        needed += c->device == r.device ? c->mapped : 0;
      std::size_t free_bytes = 0;
      std::size_t total = 0;
      driver_.memory_info(r.device, &free_bytes, &total);
      fail(&result, "out_of_memory",
           "wake needs " + format_bytes(needed) + " on device " + std::to_string(r.device) + "; " +
               format_bytes(free_bytes) +
               " is free. Nothing was woken; try again once memory is free");
      result.error.device = r.device;
      result.error.needed_bytes = needed;
      result.error.free_bytes = free_bytes;
      return result;
    }
    fail(&result, "driver_error",
         (create_rc != kDrvOk ? "cannot create device memory: " + driver_.describe(create_rc)
          : map_rc != kDrvOk  ? "cannot map device memory: " + driver_.describe(map_rc)
                              : "copy to device failed: " + driver_.describe(copy_rc)) +
             ". Nothing was woken");
    return result;
  }
  result.map_seconds = map_seconds;
  result.copy_seconds = monotonic_seconds() - t - map_seconds;

  std::vector<Policy> policies(n);
  std::vector<std::shared_ptr<Mirror>> dropped;
  for (std::size_t i = 0; i < n; ++i) {
    Region& r = *claimed[i];
    r.handle = handles[i];
    // A handle the program released lives on its mapping alone, as before the sleep.
    if (r.adopted != nullptr && r.adopted->refs <= 0) driver_.release(r.handle);
    policies[i] = r.slept_policy;
    result.regions += 1;
    result.bytes += r.mapped;
    if (r.slept_policy == Policy::kOffload) {
      result.copied_bytes += r.mirror->bytes();
    } else {
      result.discarded_bytes += r.mapped;
    }
  }
  if (!options_.keep_mirrors) {
    table_.update([&] {
      for (const auto& r : claimed) {
        if (r->mirror) dropped.push_back(std::move(r->mirror));
      }
    });
  }
  result.tags = tag_reports(claimed, policies);  // before settling, as in sleep
  table_.settle(claimed, RegionState::kAwake);
  for (auto& m : dropped)
    preparer_.release(std::move(m));
  result.seconds = monotonic_seconds() - t0;
  {
    std::lock_guard<std::mutex> lock(meta_mu_);
    for (const TagReport& tr : result.tags)
      tag_times_[tr.tag].last_wake_ms = result.seconds * 1e3;
  }
  GS_INFO("woke %zu regions, %s in %.1f ms", result.regions, format_bytes(result.bytes).c_str(),
          result.seconds * 1e3);
  return result;
}

void Engine::note_foreign(ForeignKind kind, std::uint64_t key, std::size_t bytes) {
  std::lock_guard<std::mutex> lock(meta_mu_);
  ForeignLedger& l = foreign_[static_cast<int>(kind)];
  auto [it, inserted] = l.entries.emplace(key, bytes);
  if (!inserted) {
    l.bytes -= it->second;
    it->second = bytes;
  }
  l.bytes += bytes;
}

bool Engine::forget_foreign(ForeignKind kind, std::uint64_t key) {
  std::lock_guard<std::mutex> lock(meta_mu_);
  ForeignLedger& l = foreign_[static_cast<int>(kind)];
  auto it = l.entries.find(key);
  if (it == l.entries.end()) return false;
  l.bytes -= it->second;
  l.entries.erase(it);
  return true;
}

// ---- memory the program creates and maps itself ----

bool Engine::app_key_taken(std::uint64_t value) const {
  std::lock_guard<std::mutex> lock(app_mu_);
  return app_handles_.count(value) != 0;
}

void Engine::app_created(std::uint64_t key, std::size_t bytes, int device, const void* prop,
                         std::size_t prop_size, std::uintptr_t call_site, SiteContext* site) {
  const std::uint64_t id = next_id_++;
  TagDecision decision = tagger_.decide(AllocationSite{bytes, device, id, call_site}, site);
  AppHandle h;
  h.bytes = bytes;
  h.device = device;
  h.prop.assign(static_cast<const unsigned char*>(prop),
                static_cast<const unsigned char*>(prop) + prop_size);
  h.tag = decision.tag;
  h.id = id;
  h.call_site = call_site;
  h.site = site != nullptr ? site->call_site() : nullptr;
  h.rule = decision.rule;
  h.current = key;
  if (decision.passthrough || device < 0) h.pinned = "left to the program";
  {
    std::lock_guard<std::mutex> lock(meta_mu_);
    known_tags_.insert(h.tag);
  }
  std::lock_guard<std::mutex> lock(app_mu_);
  app_handles_[key] = std::move(h);
}

Engine::AppState Engine::app_current(std::uint64_t key, PhysHandle* real) {
  std::lock_guard<std::mutex> lock(app_mu_);
  auto it = app_handles_.find(key);
  if (it == app_handles_.end()) return AppState::kUnknown;
  AppHandle& h = it->second;
  if (h.adopted == nullptr) {
    *real = h.current;
    return h.current != 0 ? AppState::kResident : AppState::kLost;
  }
  AppState state = AppState::kResident;
  table_.with_idle(h.va, [&](Region& r) {
    *real = r.handle;
    if (r.state == RegionState::kAsleep) state = AppState::kAsleep;
  });
  return state;
}

std::uint64_t Engine::app_key_of(PhysHandle real) const {
  std::lock_guard<std::mutex> lock(app_mu_);
  for (const auto& [key, h] : app_handles_) {
    if (h.adopted == nullptr && h.current == real) return key;
    if (h.adopted != nullptr) {
      std::shared_ptr<Region> r = table_.find(h.va);
      if (r != nullptr && r->handle == real) return key;
    }
  }
  return real;
}

bool Engine::unadopt(AppHandle& h, bool* asleep) {
  *asleep = false;
  if (h.adopted == nullptr) return true;
  std::shared_ptr<Region> region = table_.remove_when_awake(h.va, asleep);
  if (*asleep) return false;
  if (region != nullptr) {
    h.current = region->handle;
    preparer_.release(std::move(region->mirror));
  }
  h.refs = h.adopted->refs;
  h.adopted = nullptr;
  return true;
}

Engine::AppState Engine::app_prepare_map(std::uint64_t key, PhysHandle* real) {
  std::lock_guard<std::mutex> lock(app_mu_);
  auto it = app_handles_.find(key);
  if (it == app_handles_.end()) return AppState::kUnknown;
  AppHandle& h = it->second;
  bool asleep = false;
  if (h.mappings > 0 && !unadopt(h, &asleep)) return AppState::kAsleep;
  if (h.adopted == nullptr && h.current == 0) {
    // Unmapped while asleep, its contents are gone: give it fresh memory, as a discard would.
    PhysHandle fresh = 0;
    if (driver_.create_like(h.prop.data(), h.prop.size(), h.bytes, &fresh) != kDrvOk) {
      return AppState::kLost;
    }
    h.current = fresh;
    GS_WARN("handle 0x%llx was unmapped while asleep; it is mapped again with fresh memory",
            static_cast<unsigned long long>(key));
  }
  *real = h.current;
  return AppState::kResident;
}

void Engine::app_mapped(DevicePtr va, std::size_t size, std::size_t offset, std::uint64_t key) {
  std::lock_guard<std::mutex> lock(app_mu_);
  auto it = app_handles_.find(key);
  if (it == app_handles_.end()) return;
  AppHandle& h = it->second;
  if (++h.mappings == 1) {
    h.va = va;
    h.map_size = size;
    h.map_offset = offset;
    h.access.clear();
  }
  app_mappings_[va] = key;
}

bool Engine::app_access_allowed(DevicePtr va, std::size_t size) const {
  std::lock_guard<std::mutex> lock(app_mu_);
  for (auto it = app_mappings_.lower_bound(va); it != app_mappings_.end() && it->first < va + size;
       ++it) {
    auto h = app_handles_.find(it->second);
    if (h == app_handles_.end() || h->second.adopted == nullptr) continue;
    std::optional<RegionInfo> info = table_.info_containing(it->first);
    if (info && info->state != RegionState::kAwake) return false;
  }
  return true;
}

void Engine::app_access_set(DevicePtr va, std::size_t size,
                            const std::vector<std::pair<int, int>>& device_flags) {
  std::lock_guard<std::mutex> lock(app_mu_);
  for (auto it = app_mappings_.lower_bound(va); it != app_mappings_.end() && it->first < va + size;
       ++it) {
    auto hit = app_handles_.find(it->second);
    if (hit == app_handles_.end()) continue;
    AppHandle& h = hit->second;
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
      table_.with_idle(h.va, [&](Region&) { adopted->access = h.access; });
    } else {
      adopt_if_eligible(h, hit->first);
    }
  }
}

void Engine::adopt_if_eligible(AppHandle& h, std::uint64_t key) {
  constexpr int kReadWrite = 3;  // CU_MEM_ACCESS_FLAGS_PROT_READWRITE
  if (h.pinned != nullptr || h.mappings != 1 || h.map_offset != 0 || h.map_size != h.bytes ||
      h.current == 0) {
    return;
  }
  bool own_access = std::any_of(h.access.begin(), h.access.end(), [&](const auto& e) {
    return e.first == h.device && e.second == kReadWrite;
  });
  DeviceInfo info;
  if (!own_access || !device_info(h.device, &info) || !info.vmm) return;
  ContextRestorer restore(driver_);
  Context ctx = nullptr;
  if (driver_.ensure_context(h.device, &ctx) != kDrvOk) return;
  auto adopted = std::make_shared<AdoptedHandle>();
  adopted->key = key;
  adopted->prop = h.prop;
  adopted->access = h.access;
  adopted->refs = h.refs;
  auto region = std::make_shared<Region>();
  region->id = h.id;
  region->va = h.va;
  region->size = h.bytes;
  region->mapped = h.bytes;
  region->device = h.device;
  region->ctx = ctx;
  region->call_site = h.call_site;
  region->site = h.site;
  region->rule = h.rule;
  region->created_at = wall_seconds();
  region->tag = h.tag;
  region->handle = h.current;
  region->adopted = adopted;
  const bool offload = policies_.for_tag(h.tag) == Policy::kOffload;
  if (offload) region->mirror = std::make_shared<Mirror>(driver_, mirror_size(h.bytes), ctx);
  std::shared_ptr<Mirror> mirror = region->mirror;
  {
    std::lock_guard<std::mutex> peers_lock(peers_mu_);
    table_.insert(std::move(region));
  }
  h.adopted = adopted;
  h.current = 0;
  if (offload && options_.eager_mirrors) preparer_.submit(mirror, false);
  GS_DEBUG("region %llu: the program's handle 0x%llx (%zu bytes at 0x%llx on device %d), tag %s",
           static_cast<unsigned long long>(h.id), static_cast<unsigned long long>(key), h.bytes,
           static_cast<unsigned long long>(h.va), h.device, h.tag.c_str());
}

Engine::AppUnmap Engine::app_unmap(DevicePtr va) {
  std::lock_guard<std::mutex> lock(app_mu_);
  auto m = app_mappings_.find(va);
  if (m == app_mappings_.end()) return AppUnmap::kNotOurs;
  const std::uint64_t key = m->second;
  app_mappings_.erase(m);
  auto it = app_handles_.find(key);
  if (it == app_handles_.end()) return AppUnmap::kUnmapReal;
  AppHandle& h = it->second;
  AppUnmap out = AppUnmap::kUnmapReal;
  if (h.adopted != nullptr && h.va == va) {
    std::shared_ptr<Region> region = table_.remove_when_idle(va);
    if (region != nullptr) {
      if (region->state == RegionState::kAsleep) {
        out = AppUnmap::kAlreadyUnmapped;
        h.current = 0;  // its memory went at sleep: nothing behind the handle now
        open_gate_if_all_awake();
      } else {
        h.current = region->handle;
      }
      preparer_.release(std::move(region->mirror));
    }
    h.refs = h.adopted->refs;
    h.adopted = nullptr;
  }
  --h.mappings;
  if (h.va == va) h.va = 0;
  drop_if_gone(key);
  return out;
}

void Engine::drop_if_gone(std::uint64_t key) {
  auto it = app_handles_.find(key);
  if (it != app_handles_.end() && it->second.refs <= 0 && it->second.mappings <= 0) {
    app_handles_.erase(it);
  }
}

Engine::AppRelease Engine::app_release(std::uint64_t key, PhysHandle* real) {
  std::lock_guard<std::mutex> lock(app_mu_);
  auto it = app_handles_.find(key);
  if (it == app_handles_.end()) return AppRelease::kNotOurs;
  AppHandle& h = it->second;
  AppRelease out = AppRelease::kStillHeld;
  if (h.adopted != nullptr) {
    std::shared_ptr<AdoptedHandle> adopted = h.adopted;
    table_.with_idle(h.va, [&](Region& r) {
      if (--adopted->refs > 0) return;
      // Asleep: the sleep already dropped the program's reference along with the memory.
      out = r.state == RegionState::kAsleep ? AppRelease::kNothingToRelease
                                            : AppRelease::kReleaseReal;
      *real = r.handle;
    });
  } else if (--h.refs <= 0) {
    out = h.current != 0 ? AppRelease::kReleaseReal : AppRelease::kNothingToRelease;
    *real = h.current;
  }
  drop_if_gone(key);
  return out;
}

int Engine::app_retained(std::uint64_t key) {
  std::lock_guard<std::mutex> lock(app_mu_);
  auto it = app_handles_.find(key);
  if (it == app_handles_.end()) return 0;
  AppHandle& h = it->second;
  int before = h.refs;
  if (h.adopted != nullptr) {
    std::shared_ptr<AdoptedHandle> adopted = h.adopted;
    table_.with_idle(h.va, [&](Region&) { before = adopted->refs++; });
  } else {
    ++h.refs;
  }
  return before;
}

Engine::AppState Engine::app_pin(std::uint64_t key, const char* why, PhysHandle* real) {
  std::lock_guard<std::mutex> lock(app_mu_);
  auto it = app_handles_.find(key);
  if (it == app_handles_.end()) return AppState::kUnknown;
  AppHandle& h = it->second;
  bool asleep = false;
  if (!unadopt(h, &asleep)) return AppState::kAsleep;
  if (h.pinned == nullptr) {
    h.pinned = why;
    GS_INFO("the program's handle 0x%llx (%zu bytes) is %s: it stays awake from now on",
            static_cast<unsigned long long>(key), h.bytes, why);
  }
  *real = h.current;
  return h.current != 0 ? AppState::kResident : AppState::kLost;
}

std::vector<int> Engine::accessors_of(int owner) const {
  std::vector<int> out;
  for (auto it = peers_.lower_bound({owner, -1}); it != peers_.end() && it->first == owner; ++it)
    out.push_back(it->second);
  return out;
}

void Engine::grant_accessors(DevicePtr va, std::size_t size, const std::vector<int>& accessors) {
  for (int accessor : accessors) {
    if (DrvStatus rc = driver_.set_access(va, size, accessor)) {
      GS_WARN("cannot grant device %d access to 0x%llx (%zu bytes): %s", accessor,
              static_cast<unsigned long long>(va), size, driver_.describe(rc).c_str());
    }
  }
}

void Engine::grant_peer(int accessor, int owner) {
  if (accessor == owner || accessor < 0 || owner < 0) return;
  std::lock_guard<std::mutex> op(op_mu_);
  std::lock_guard<std::mutex> lock(peers_mu_);
  if (!peers_.insert({owner, accessor}).second) return;
  // Claiming keeps a concurrent free from unmapping a region while its access changes.
  auto regions = table_.claim([owner](const Region& r) { return r.device == owner; },
                              RegionState::kAwake, RegionState::kWaking);
  for (const auto& r : regions)
    grant_accessors(r->va, r->mapped, {accessor});
  table_.settle(regions, RegionState::kAwake);
  GS_INFO(
      "peer access: device %d may use device %d's memory (%zu regions granted now; asleep "
      "ones on wake)",
      accessor, owner, regions.size());
}

void Engine::revoke_peer(int accessor, int owner) {
  std::lock_guard<std::mutex> op(op_mu_);
  std::lock_guard<std::mutex> lock(peers_mu_);
  peers_.erase({owner, accessor});
}

std::optional<RegionInfo> Engine::region_containing(DevicePtr addr) const {
  return table_.info_containing(addr);
}

EngineStatus Engine::status() {
  relax_this_thread();
  EngineStatus s;
  if (gate_ != nullptr) s.gate = gate_->stats();
  s.default_tag = tagger_.default_tag();
  s.phase_tag = tagger_.phase_tag();
  std::map<std::string, TagStatus> by_tag;
  std::set<int> devices;
  {
    std::lock_guard<std::mutex> lock(meta_mu_);
    for (const std::string& tag : known_tags_) {
      TagStatus& t = by_tag[tag];
      auto it = tag_times_.find(tag);
      if (it != tag_times_.end()) {
        t.last_sleep_ms = it->second.last_sleep_ms;
        t.last_wake_ms = it->second.last_wake_ms;
      }
    }
    const ForeignLedger& pt = foreign_[static_cast<int>(ForeignKind::kPassthrough)];
    s.passthrough_allocations = pt.entries.size();
    s.passthrough_bytes = pt.bytes;
    s.unsleepable.push_back(
        {"passthrough",
         "left to the CUDA allocator (a device without virtual memory management, a "
         "pass-through decision, or an allocation made while the library was off)",
         pt.entries.size(), pt.bytes});
    const ForeignLedger& so = foreign_[static_cast<int>(ForeignKind::kStreamOrdered)];
    s.unsleepable.push_back(
        {"stream_ordered",
         "stream-ordered pool allocations (cudaMallocAsync, cuMemAllocAsync): the driver's pool "
         "owns that memory",
         so.entries.size(), so.bytes});
  }
  {
    std::lock_guard<std::mutex> lock(app_mu_);
    std::size_t count = 0;
    std::size_t bytes = 0;
    for (const auto& [key, h] : app_handles_) {
      if (h.adopted != nullptr) continue;
      ++count;
      bytes += h.bytes;
    }
    s.unsleepable.push_back(
        {"application_vmm",
         "physical memory the program creates itself (cuMemCreate) and maps other than once and "
         "whole, exports to another process, or has not mapped yet",
         count, bytes});
  }
  {
    std::lock_guard<std::mutex> lock(peers_mu_);
    for (const auto& [owner, accessor] : peers_)
      s.peers.push_back(PeerGrant{accessor, owner});
  }
  for (const RegionInfo& info : table_.snapshot()) {
    TagStatus& t = by_tag[info.tag];
    t.regions += 1;
    t.bytes += info.mapped;
    t.mirror_bytes += info.mirror_bytes;
    bool resident = info.state == RegionState::kAwake || info.state == RegionState::kSleeping;
    (resident ? t.resident_bytes : t.asleep_bytes) += info.mapped;
    (resident ? t.awake_regions : t.asleep_regions) += 1;
    if (info.state == RegionState::kAwake && policies_.for_tag(info.tag) == Policy::kOffload) {
      std::size_t target = info.mirror_size ? info.mirror_size : mirror_size(info.size);
      t.mirror_pending_bytes += target - std::min(target, info.mirror_bytes);
    }
  }
  for (auto& [tag, t] : by_tag) {
    t.tag = tag;
    t.policy = policies_.for_tag(tag);
    s.tags.push_back(t);
  }
  {
    std::lock_guard<std::mutex> lock(devices_mu_);
    devices = used_devices_;
  }
  for (int d : devices) {
    DeviceStatus ds;
    ds.device = d;
    ds.known = driver_.memory_info(d, &ds.free_bytes, &ds.total_bytes) == kDrvOk;
    s.devices.push_back(ds);
  }
  return s;
}

std::vector<RegionInfo> Engine::regions() const {
  return table_.snapshot();
}

void Engine::drain_background() {
  preparer_.drain();
}

}  // namespace gpusleep

// The engine's shared state and the small books kept beside the region table.
#include "core/engine_parts.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "base/clock.h"
#include "base/log.h"

namespace gpusleep {
namespace {

constexpr int kBackgroundPrepThreads = 4;
// Background preparation starts this long after an allocation: allocations freed sooner (scratch
// buffers, allocation benchmarks) are never pinned.

int choose_prep_threads(int configured) {
  if (configured > 0) return configured;
  int cpus = static_cast<int>(std::thread::hardware_concurrency());
  return std::clamp(cpus / 2, 2, 16);
}

}  // namespace

std::size_t round_up(std::size_t n, std::size_t to) {
  return (n + to - 1) / to * to;
}

std::size_t mirror_size(std::size_t region_size) {
  return round_up(region_size, 4096);
}

ContextRestorer::ContextRestorer(Driver& driver) : driver_(driver) {
  ok_ = driver_.current_context(&saved_) == kDrvOk;
}

ContextRestorer::~ContextRestorer() {
  if (ok_) driver_.set_context(saved_);
}

bool DeviceCatalog::info(int device, Info* info) {
  if (device < 0 || device >= kMaxDevices) return false;
  std::lock_guard<std::mutex> lock(mu_);
  Info& d = devices_[device];
  if (!d.checked) {
    d.checked = true;
    bool vmm = false;
    std::size_t gran = 0;
    if (driver_.vmm_supported(device, &vmm) == kDrvOk && vmm &&
        driver_.granularity(device, &gran) == kDrvOk && gran > 0) {
      d.vmm = true;
      d.granularity = gran;
      used_.insert(device);
    } else {
      GS_WARN("device %d does not support virtual memory management; its allocations pass through",
              device);
    }
  }
  *info = d;
  return true;
}

std::set<int> DeviceCatalog::used() const {
  std::lock_guard<std::mutex> lock(mu_);
  return used_;
}

void TagBook::add(const std::string& tag) {
  std::lock_guard<std::mutex> lock(mu_);
  known_.insert(tag);
}

bool TagBook::resolve(const std::vector<std::string>& requested, std::set<std::string>* tags,
                      OpResult* result) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (requested.empty()) {
    *tags = known_;
    return true;
  }
  std::vector<std::string> unknown;
  for (const std::string& tag : requested) {
    if (!valid_tag_name(tag)) {
      result->fail(Failure::kInvalidArgument, "invalid tag name '" + tag.substr(0, 80) + "'");
      return false;
    }
    if (known_.count(tag) == 0) unknown.push_back(tag);
    tags->insert(tag);
  }
  if (!unknown.empty()) {
    std::string message = "unknown tag";
    message += unknown.size() > 1 ? "s" : "";
    for (std::size_t i = 0; i < unknown.size(); ++i)
      message += (i ? ", '" : " '") + unknown[i] + "'";
    message += " (known:";
    for (const std::string& t : known_)
      message += " " + t;
    message += ")";
    result->fail(Failure::kUnknownTag, message);
    return false;
  }
  return true;
}

bool TagBook::has_slept(const std::string& tag) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = times_.find(tag);
  return it != times_.end() && it->second.last_sleep_ms.has_value();
}

void TagBook::record_sleep(const std::vector<TagReport>& tags, double ms) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const TagReport& t : tags)
    times_[t.tag].last_sleep_ms = ms;
}

void TagBook::record_wake(const std::vector<TagReport>& tags, double ms) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const TagReport& t : tags)
    times_[t.tag].last_wake_ms = ms;
}

std::map<std::string, TagBook::Times> TagBook::known() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, Times> out;
  for (const std::string& tag : known_) {
    auto it = times_.find(tag);
    out[tag] = it != times_.end() ? it->second : Times{};
  }
  return out;
}

void ForeignLedger::note(ForeignKind kind, std::uint64_t key, std::size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  Kind& l = kinds_[static_cast<int>(kind)];
  auto [it, inserted] = l.entries.emplace(key, bytes);
  if (!inserted) {
    l.bytes -= it->second;
    it->second = bytes;
  }
  l.bytes += bytes;
}

bool ForeignLedger::forget(ForeignKind kind, std::uint64_t key) {
  std::lock_guard<std::mutex> lock(mu_);
  Kind& l = kinds_[static_cast<int>(kind)];
  auto it = l.entries.find(key);
  if (it == l.entries.end()) return false;
  l.bytes -= it->second;
  l.entries.erase(it);
  return true;
}

ForeignLedger::Totals ForeignLedger::totals(ForeignKind kind) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Kind& l = kinds_[static_cast<int>(kind)];
  return Totals{l.entries.size(), l.bytes};
}

void OperationProgress::begin(const char* op, std::vector<std::string> tags, std::size_t regions,
                              std::size_t total_bytes) {
  OperationStatus now;
  now.op = op;
  now.tags = std::move(tags);
  now.regions = regions;
  now.total_bytes = total_bytes;
  std::lock_guard<std::mutex> lock(mu_);
  done_.store(0, std::memory_order_relaxed);
  waiting_.store(false, std::memory_order_relaxed);
  started_ = monotonic_seconds();
  now_ = std::move(now);
}

void OperationProgress::end() {
  std::lock_guard<std::mutex> lock(mu_);
  now_.reset();
}

std::optional<OperationStatus> OperationProgress::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!now_) return std::nullopt;
  OperationStatus s = *now_;
  s.done_bytes = std::min(done_.load(std::memory_order_relaxed), s.total_bytes);
  s.waiting = waiting_.load(std::memory_order_relaxed);
  s.seconds = monotonic_seconds() - started_;
  return s;
}

EngineParts::EngineParts(Driver& driver_in, const Options& options_in, Gate* gate_in)
    : driver(driver_in),
      options(options_in),
      gate(gate_in),
      tagger(options_in.default_tag),
      tiers(driver_in, options_in),
      preparer(
          choose_prep_threads(options_in.prep_threads), kBackgroundPrepThreads,
          std::chrono::milliseconds(options_in.prep_settle_ms),
          [this] { driver.relax_capture_mode(); },
          PrepPacing{options_in.prep_priority, options_in.prep_rate}),
      devices(driver_in),
      copier(driver_in, options_in.copy_streams, options_in.copy_chunk) {
  for (const auto& [tag, policy] : options.policies)
    policies.set(tag, policy);
  tags.add(options.default_tag);
}

void EngineParts::open_gate_if_all_awake() {
  if (gate == nullptr || !gate->closed()) return;
  table.update([&] {
    bool all_awake = true;
    table.for_each_locked(
        [&](Region& r) { all_awake = all_awake && (r.state == RegionState::kAwake || !r.gated); });
    if (all_awake) gate->open();
  });
}

void EngineParts::relax_this_thread() {
  thread_local bool relaxed = false;
  if (!relaxed) relaxed = driver.relax_capture_mode() == kDrvOk;
}

}  // namespace gpusleep

// The engine's status.
#include "core/engine_status.h"

#include <algorithm>
#include <map>

#include "core/adoption.h"
#include "core/engine_parts.h"

namespace gpusleep {
namespace {

// Memory of the process that sleep cannot release, by kind, every kind listed.
std::vector<UnsleepableStatus> unsleepable(const EngineParts& parts, const ProgramMemory& program) {
  const ForeignLedger::Totals pt = parts.foreign.totals(ForeignKind::kPassthrough);
  const ForeignLedger::Totals so = parts.foreign.totals(ForeignKind::kStreamOrdered);
  const auto [app_count, app_bytes] = program.unsleepable();
  return {
      {"passthrough",
       "left to the CUDA allocator (a device without virtual memory management, a pass-through "
       "decision, or an allocation made while the library was off)",
       pt.allocations, pt.bytes},
      {"stream_ordered",
       "stream-ordered pool allocations (cudaMallocAsync, cuMemAllocAsync): the driver's pool "
       "owns that memory",
       so.allocations, so.bytes},
      {"application_vmm",
       "physical memory the program creates itself (cuMemCreate) and maps other than once and "
       "whole, exports to another process, or has not mapped yet",
       app_count, app_bytes},
  };
}

}  // namespace

EngineStatus collect_status(EngineParts& parts, const ProgramMemory& program) {
  parts.relax_this_thread();
  EngineStatus s;
  s.operation = parts.progress.snapshot();
  if (parts.gate != nullptr) s.gate = parts.gate->stats();
  s.default_tag = parts.tagger.default_tag();
  s.phase_tag = parts.tagger.phase_tag();
  std::map<std::string, TagStatus> by_tag;
  for (const auto& [tag, times] : parts.tags.known()) {
    TagStatus& t = by_tag[tag];
    t.last_sleep_ms = times.last_sleep_ms;
    t.last_wake_ms = times.last_wake_ms;
  }
  const ForeignLedger::Totals pt = parts.foreign.totals(ForeignKind::kPassthrough);
  s.passthrough_allocations = pt.allocations;
  s.passthrough_bytes = pt.bytes;
  s.unsleepable = unsleepable(parts, program);
  s.peers = parts.peers.grants();
  for (const RegionInfo& info : parts.table.snapshot()) {
    TagStatus& t = by_tag[info.tag];
    t.regions += 1;
    t.bytes += info.mapped;
    t.mirror_bytes += info.mirror_bytes;
    t.pageable_bytes += info.pageable_bytes;
    t.spilled_bytes += info.spilled_bytes;
    bool resident = info.state == RegionState::kAwake || info.state == RegionState::kSleeping;
    (resident ? t.resident_bytes : t.asleep_bytes) += info.mapped;
    (resident ? t.awake_regions : t.asleep_regions) += 1;
    if (info.state == RegionState::kAwake && parts.policies.for_tag(info.tag) == Policy::kOffload) {
      std::size_t target = info.mirror_size ? info.mirror_size : mirror_size(info.size);
      t.mirror_pending_bytes += target - std::min(target, info.mirror_bytes);
    }
  }
  for (auto& [tag, t] : by_tag) {
    t.tag = tag;
    t.policy = parts.policies.for_tag(tag);
    s.tags.push_back(t);
  }
  s.host = parts.tiers.budget().usage();
  s.spill_dir = parts.tiers.spill_dir();
  s.spill_problem = parts.tiers.spill_problem();
  for (int d : parts.devices.used()) {
    DeviceStatus ds;
    ds.device = d;
    ds.known = parts.driver.memory_info(d, &ds.free_bytes, &ds.total_bytes) == kDrvOk;
    s.devices.push_back(ds);
  }
  return s;
}

}  // namespace gpusleep

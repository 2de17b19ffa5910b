// The engine facade: each call goes to the part that does the work. Locks: the table's lock
// guards region state (held briefly); the operation lock serializes sleep, wake, retag and peer
// changes and is held across their copies, but allocation and free never take it, so the host's
// threads keep allocating while a controller moves other tags.
#include "core/engine.h"

#include <set>

#include "core/allocation.h"
#include "core/engine_parts.h"
#include "core/engine_status.h"
#include "core/operation.h"
#include "core/peers.h"

namespace gpusleep {

Engine::Engine(Driver& driver, const Options& options, Gate* gate)
    : parts_(std::make_unique<EngineParts>(driver, options, gate)),
      program_(std::make_unique<ProgramMemory>(*parts_)) {}

Engine::~Engine() {
  for (const RegionInfo& r : parts_->table.snapshot()) {
    if (!r.adopted) free(r.va);
  }
}

AllocOutcome Engine::allocate(std::size_t size, int device, std::uintptr_t call_site,
                              DevicePtr* out, SiteContext* site) {
  return allocate_region(*parts_, size, device, call_site, out, site);
}

FreeOutcome Engine::free(DevicePtr va) {
  return free_region(*parts_, va);
}

void Engine::note_passthrough(DevicePtr ptr, std::size_t size) {
  parts_->foreign.note(ForeignKind::kPassthrough, ptr, size);
}

bool Engine::forget_passthrough(DevicePtr ptr) {
  return parts_->foreign.forget(ForeignKind::kPassthrough, ptr);
}

void Engine::note_foreign(ForeignKind kind, std::uint64_t key, std::size_t bytes) {
  parts_->foreign.note(kind, key, bytes);
}

bool Engine::forget_foreign(ForeignKind kind, std::uint64_t key) {
  return parts_->foreign.forget(kind, key);
}

bool Engine::app_key_taken(std::uint64_t value) const {
  return program_->key_taken(value);
}

void Engine::app_created(std::uint64_t key, std::size_t bytes, int device, const void* prop,
                         std::size_t prop_size, std::uintptr_t call_site, SiteContext* site) {
  program_->created(key, bytes, device, prop, prop_size, call_site, site);
}

Engine::AppState Engine::app_current(std::uint64_t key, PhysHandle* real) {
  return program_->current(key, real);
}

std::uint64_t Engine::app_key_of(PhysHandle real) const {
  return program_->key_of(real);
}

Engine::AppState Engine::app_prepare_map(std::uint64_t key, PhysHandle* real) {
  return program_->prepare_map(key, real);
}

void Engine::app_mapped(DevicePtr va, std::size_t size, std::size_t offset, std::uint64_t key) {
  program_->mapped(va, size, offset, key);
}

bool Engine::app_access_allowed(DevicePtr va, std::size_t size) const {
  return program_->access_allowed(va, size);
}

void Engine::app_access_set(DevicePtr va, std::size_t size,
                            const std::vector<std::pair<int, int>>& device_flags) {
  program_->access_set(va, size, device_flags);
}

Engine::AppUnmap Engine::app_unmap(DevicePtr va) {
  return program_->unmap(va);
}

Engine::AppRelease Engine::app_release(std::uint64_t key, PhysHandle* real) {
  return program_->release(key, real);
}

int Engine::app_retained(std::uint64_t key) {
  return program_->retained(key);
}

Engine::AppState Engine::app_pin(std::uint64_t key, const char* why, PhysHandle* real) {
  return program_->pin(key, why, real);
}

void Engine::grant_peer(int accessor, int owner) {
  gpusleep::grant_peer(*parts_, accessor, owner);
}

void Engine::revoke_peer(int accessor, int owner) {
  gpusleep::revoke_peer(*parts_, accessor, owner);
}

OpResult Engine::sleep(const SleepRequest& request) {
  return sleep_tags(*parts_, request);
}

OpResult Engine::wake(const WakeRequest& request) {
  return wake_tags(*parts_, request);
}

EngineStatus Engine::status() {
  return collect_status(*parts_, *program_);
}

std::vector<RegionInfo> Engine::regions() const {
  return parts_->table.snapshot();
}

std::optional<RegionInfo> Engine::region_containing(DevicePtr addr) const {
  return parts_->table.info_containing(addr);
}

void Engine::set_rules(std::shared_ptr<const RuleSet> rules) {
  if (rules != nullptr) {
    for (const Rule& r : rules->rules()) {
      if (r.policy) parts_->policies.set(r.tag, *r.policy);
      if (!r.tag.empty()) parts_->tags.add(r.tag);
    }
  }
  parts_->tagger.set_rules(std::move(rules));
}

std::shared_ptr<const RuleSet> Engine::rules() const {
  return parts_->tagger.rules();
}

std::pair<std::size_t, std::size_t> Engine::retag(
    const std::function<bool(const RegionInfo&)>& select, const std::string& tag) {
  std::lock_guard<std::mutex> op(parts_->op_mu);  // no region changes hands meanwhile
  std::set<std::uint64_t> ids;
  std::size_t bytes = 0;
  for (const RegionInfo& info : parts_->table.snapshot()) {
    if (select(info)) {
      ids.insert(info.id);
      bytes += info.mapped;
    }
  }
  parts_->table.update([&] {
    parts_->table.for_each_locked([&](Region& r) {
      if (ids.count(r.id)) r.tag = tag;
    });
  });
  if (!ids.empty()) parts_->tags.add(tag);  // a retag of nothing creates no tag
  return {ids.size(), bytes};
}

bool Engine::set_phase_tag(const std::string& tag) {
  if (!tag.empty() && !valid_tag_name(tag)) return false;
  parts_->tagger.set_phase_tag(tag);
  if (!tag.empty()) parts_->tags.add(tag);
  return true;
}

std::string Engine::phase_tag() const {
  return parts_->tagger.phase_tag();
}

const std::string& Engine::default_tag() const {
  return parts_->tagger.default_tag();
}

Policy Engine::policy_for(const std::string& tag) const {
  return parts_->policies.for_tag(tag);
}

void Engine::set_policy(const std::string& tag, Policy policy) {
  parts_->policies.set(tag, policy);
}

std::map<std::string, Policy> Engine::policies() const {
  return parts_->policies.entries();
}

void Engine::drain_background() {
  parts_->preparer.drain();
}

}  // namespace gpusleep

// The engine: the core's one facade. It allocates into tagged regions, sleeps and wakes tags,
// adopts the program's own physical memory, keeps peer access and reports status. It reaches the
// GPU only through a Driver, so it runs the same over the CUDA driver and over the emulated one
// in tests. The work is done by its parts (engine_parts.h); callers see only this class.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/adoption.h"
#include "core/engine_types.h"
#include "core/gate.h"
#include "core/options.h"
#include "core/policy.h"
#include "core/region.h"
#include "core/rules.h"
#include "core/site_context.h"
#include "driver/driver.h"

namespace gpusleep {

struct EngineParts;

class Engine {
 public:
  // `gate` (optional) is closed while any region is asleep, so the program's GPU work waits
  // instead of reaching unmapped memory (gate.h).
  Engine(Driver& driver, const Options& options, Gate* gate = nullptr);
  // Frees every region (the library's engine lives as long as the process and is never
  // destroyed; tests destroy theirs).
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // ---- Allocation (allocation.h) ----
  // Allocates `size` bytes on `device` as a tagged region. Thread-safe; never blocks on a sleep
  // or wake in progress.
  // `site` answers what tagging rules ask about the call site and gives the call site to keep
  // (null: only the return address `call_site` is known).
  AllocOutcome allocate(std::size_t size, int device, std::uintptr_t call_site, DevicePtr* out,
                        SiteContext* site = nullptr);
  // Frees the region starting at `va` (awake or asleep: its memory, mirror and address range).
  // Waits while a sleep or wake is moving that region. kNotOurs for any other pointer.
  FreeOutcome free(DevicePtr va);

  // Bookkeeping of allocations left to the real allocator, for status.
  void note_passthrough(DevicePtr ptr, std::size_t size);
  // True when `ptr` was noted (and is now forgotten).
  bool forget_passthrough(DevicePtr ptr);
  // Bookkeeping of device memory the program manages through other paths (for status). `key` is
  // the pointer.
  void note_foreign(ForeignKind kind, std::uint64_t key, std::size_t bytes);
  // True when `key` was noted (and is now forgotten).
  bool forget_foreign(ForeignKind kind, std::uint64_t key);

  // ---- Physical memory the program creates and maps itself (adoption.h) ----
  using AppState = ProgramMemory::State;
  using AppUnmap = ProgramMemory::Unmap;
  using AppRelease = ProgramMemory::Release;
  bool app_key_taken(std::uint64_t value) const;
  void app_created(std::uint64_t key, std::size_t bytes, int device, const void* prop,
                   std::size_t prop_size, std::uintptr_t call_site, SiteContext* site = nullptr);
  AppState app_current(std::uint64_t key, PhysHandle* real);
  std::uint64_t app_key_of(PhysHandle real) const;
  AppState app_prepare_map(std::uint64_t key, PhysHandle* real);
  void app_mapped(DevicePtr va, std::size_t size, std::size_t offset, std::uint64_t key);
  bool app_access_allowed(DevicePtr va, std::size_t size) const;
  void app_access_set(DevicePtr va, std::size_t size,
                      const std::vector<std::pair<int, int>>& device_flags);
  AppUnmap app_unmap(DevicePtr va);
  AppRelease app_release(std::uint64_t key, PhysHandle* real);
  int app_retained(std::uint64_t key);
  AppState app_pin(std::uint64_t key, const char* why, PhysHandle* real);

  // ---- Peer access (peers.h) ----
  // Kernels on `accessor` may use memory on `owner`. Grants every region on `owner` access from
  // `accessor` now, at each later allocation and after every wake. Waits for a sleep or wake in
  // progress. Revoking only stops future grants (mappings keep their access).
  void grant_peer(int accessor, int owner);
  void revoke_peer(int accessor, int owner);

  // ---- Sleep and wake (operation.h) ----
  // Serialized with each other. Each is all-or-nothing: on failure every region is left as it
  // was, and the error says why.
  OpResult sleep(const SleepRequest& request);
  OpResult wake(const WakeRequest& request);

  // ---- What the engine holds ----
  EngineStatus status();
  std::vector<RegionInfo> regions() const;
  // The region whose range contains `addr`.
  std::optional<RegionInfo> region_containing(DevicePtr addr) const;

  // ---- Tags, rules and policies ----
  // Tagging rules (null: none). Rules that set a policy set their tag's policy.
  void set_rules(std::shared_ptr<const RuleSet> rules);
  std::shared_ptr<const RuleSet> rules() const;
  // Gives every region `select` picks the tag `tag` (waits for a sleep or wake in progress).
  // Returns the regions retagged and their mapped bytes.
  std::pair<std::size_t, std::size_t> retag(const std::function<bool(const RegionInfo&)>& select,
                                            const std::string& tag);
  // Phase tagging: every later allocation gets `tag` (empty: the default tag again). Returns
  // false if `tag` is neither empty nor a valid tag name.
  bool set_phase_tag(const std::string& tag);
  std::string phase_tag() const;
  const std::string& default_tag() const;
  // The policy of `tag`, and its override (a later sleep of the tag follows it).
  Policy policy_for(const std::string& tag) const;
  void set_policy(const std::string& tag, Policy policy);
  // Tags with an explicit policy (override or built-in), in name order.
  std::map<std::string, Policy> policies() const;

  // Waits until background mirror preparation is idle (tests, benchmarks).
  void drain_background();

 private:
  std::unique_ptr<EngineParts> parts_;
  std::unique_ptr<ProgramMemory> program_;
};

}  // namespace gpusleep

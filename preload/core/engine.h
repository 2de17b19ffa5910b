// The engine: allocation into tagged regions, and sleep/wake of tags. It reaches the GPU only
// through a Driver, so it runs the same over the CUDA driver and over the emulated one in tests.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/copier.h"
#include "driver/driver.h"
#include "core/gate.h"
#include "core/mirror.h"
#include "core/options.h"
#include "core/policy.h"
#include "core/region.h"
#include "core/tagger.h"

namespace gpusleep {

// Why an operation failed. `code` is one of the protocol's error codes (docs/protocol.md).
struct OpError {
  std::string code;
  std::string message;
  int device = -1;               // out_of_memory: the device that lacked memory
  std::size_t needed_bytes = 0;  // out_of_memory, host_out_of_memory
  std::size_t free_bytes = 0;    // out_of_memory, host_out_of_memory
};

struct TagReport {
  std::string tag;
  Policy policy = Policy::kOffload;
  std::size_t regions = 0;
  std::size_t bytes = 0;
};

struct OpResult {
  bool ok = true;
  OpError error;
  std::vector<TagReport> tags;    // tags that changed state, with what was done
  std::vector<std::string> noop;  // requested tags already in the requested state
  std::size_t regions = 0;
  std::size_t bytes = 0;         // device bytes released (sleep) or mapped (wake)
  std::size_t copied_bytes = 0;  // bytes copied to host (sleep) or back (wake)
  std::size_t discarded_bytes = 0;
  double seconds = 0;
  double sync_seconds = 0;  // sleep: waiting for the device to go idle
  double copy_seconds = 0;  // mirror preparation and copies
  double map_seconds = 0;   // sleep: unmap and release; wake: create, map and set access
};

struct SleepRequest {
  std::vector<std::string> tags;  // empty: every tag
  std::optional<Policy> policy;   // overrides each tag's policy for this request
  // Whether the program's GPU work waits while these regions are asleep (gate.h). False: the
  // caller knows the program leaves them alone, and its work on the rest goes on.
  bool gate = true;
};

struct WakeRequest {
  std::vector<std::string> tags;  // empty: every tag
};

struct TagStatus {
  std::string tag;
  Policy policy = Policy::kOffload;
  std::size_t regions = 0;
  std::size_t awake_regions = 0;
  std::size_t asleep_regions = 0;
  std::size_t bytes = 0;           // mapped bytes of all its regions
  std::size_t resident_bytes = 0;  // of awake regions
  std::size_t asleep_bytes = 0;
  std::size_t mirror_bytes = 0;  // host bytes prepared for its regions
  // Host bytes its awake regions still need pinned before a sleep can copy at full speed
  // (0 for discard tags).
  std::size_t mirror_pending_bytes = 0;
  std::optional<double> last_sleep_ms;
  std::optional<double> last_wake_ms;
};

struct DeviceStatus {
  int device = 0;
  bool known = false;  // false: the driver did not answer
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
};

// Device memory of the process that sleep cannot release, by why.
enum class ForeignKind {
  kPassthrough,    // left to the real allocator
  kStreamOrdered,  // cudaMallocAsync / cuMemAllocAsync / cuMemAllocFromPoolAsync
};
inline constexpr int kForeignKinds = 2;

struct UnsleepableStatus {
  std::string kind;  // "passthrough", "stream_ordered", "application_vmm"
  std::string reason;
  std::size_t allocations = 0;
  std::size_t bytes = 0;
};

struct PeerGrant {
  int accessor = 0;  // the device whose kernels read the memory
  int owner = 0;     // the device the memory lives on
};

struct EngineStatus {
  std::string default_tag;
  std::string phase_tag;
  std::vector<TagStatus> tags;
  std::vector<DeviceStatus> devices;
  std::size_t passthrough_allocations = 0;
  std::size_t passthrough_bytes = 0;
  std::vector<UnsleepableStatus> unsleepable;  // every kind, with zero counts too
  std::vector<PeerGrant> peers;
  std::optional<GateStats> gate;  // null: the engine has no gate
};

enum class AllocOutcome {
  kManaged,      // *out is a region
  kPassthrough,  // caller must use the real allocator
  kOutOfMemory,  // no device memory; the caller reports cudaErrorMemoryAllocation
};

enum class FreeOutcome { kFreed, kNotOurs };

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
  // ---- Physical memory the program creates and maps itself (cuMemCreate and kin) ----
  // The hooks call these around the real driver calls. A handle mapped once, whole, with access
  // granted is adopted as a region of its tag and sleeps like the library's own; any other use
  // (several mappings, export to another process, multicast) leaves it awake and counted as not
  // sleepable. The program keeps its handle value (the key); after a wake the driver's handle
  // behind it is a new one, which app_current() translates to.
  enum class AppState { kUnknown, kResident, kAsleep, kLost };
  // Whether `value` is the key of a live handle (a new handle of that value must not reach the
  // program).
  bool app_key_taken(std::uint64_t value) const;
  void app_created(std::uint64_t key, std::size_t bytes, int device, const void* prop,
                   std::size_t prop_size, std::uintptr_t call_site, SiteContext* site = nullptr);
  // The driver handle behind `key` now. kLost: its contents went with an unmap while asleep.
  AppState app_current(std::uint64_t key, PhysHandle* real);
  // The key the program knows for the driver handle `real` (`real` itself if none).
  std::uint64_t app_key_of(PhysHandle real) const;
  // Before a cuMemMap of `key`: a second mapping un-adopts it. kAsleep: refuse the call.
  AppState app_prepare_map(std::uint64_t key, PhysHandle* real);
  void app_mapped(DevicePtr va, std::size_t size, std::size_t offset, std::uint64_t key);
  // Before cuMemSetAccess: false when the range holds asleep memory (refuse the call).
  bool app_access_allowed(DevicePtr va, std::size_t size) const;
  void app_access_set(DevicePtr va, std::size_t size,
                      const std::vector<std::pair<int, int>>& device_flags);
  enum class AppUnmap { kNotOurs, kUnmapReal, kAlreadyUnmapped };
  // Before cuMemUnmap at `va`: waits for a sleep or wake moving it.
  AppUnmap app_unmap(DevicePtr va);
  enum class AppRelease { kNotOurs, kReleaseReal, kNothingToRelease, kStillHeld };
  AppRelease app_release(std::uint64_t key, PhysHandle* real);
  // cuMemRetainAllocationHandle gave the program one more reference; returns the references it
  // held before (0: the driver's new reference is the one now held on its behalf).
  int app_retained(std::uint64_t key);
  // Makes `key` not sleepable for good (`why`: "exported"...). kAsleep: refuse the call.
  AppState app_pin(std::uint64_t key, const char* why, PhysHandle* real);

  // Peer access: kernels on `accessor` may use memory on `owner`. Grants every region on `owner`
  // access from `accessor` now, at each later allocation and after every wake. Waits for a sleep
  // or wake in progress. Revoking only stops future grants (mappings keep their access).
  void grant_peer(int accessor, int owner);
  void revoke_peer(int accessor, int owner);

  // The region whose range contains `addr`.
  std::optional<RegionInfo> region_containing(DevicePtr addr) const;

  // Sleep and wake are serialized with each other. Each is all-or-nothing: on failure every
  // region is left as it was, and the error says why.
  OpResult sleep(const SleepRequest& request);
  OpResult wake(const WakeRequest& request);

  EngineStatus status();
  std::vector<RegionInfo> regions() const;

  // Tagging rules (null: none). Rules that set a policy set their tag's policy.
  void set_rules(std::shared_ptr<const RuleSet> rules);
  std::shared_ptr<const RuleSet> rules() const { return tagger_.rules(); }

  // Gives every region `select` picks the tag `tag` (waits for a sleep or wake in progress).
  // Returns the regions retagged and their mapped bytes.
  std::pair<std::size_t, std::size_t> retag(const std::function<bool(const RegionInfo&)>& select,
                                            const std::string& tag);

  // Phase tagging. Returns false if `tag` is neither empty nor a valid tag name.
  bool set_phase_tag(const std::string& tag);
  Tagger& tagger() { return tagger_; }
  PolicyTable& policies() { return policies_; }
  Driver& driver() { return driver_; }

  // Waits until background mirror preparation is idle (tests, benchmarks).
  void drain_background();

 private:
  struct DeviceInfo {
    bool checked = false;
    bool vmm = false;
    std::size_t granularity = 0;
  };
  struct TagTimes {
    std::optional<double> last_sleep_ms;
    std::optional<double> last_wake_ms;
  };
  static constexpr int kMaxDevices = 64;

  bool device_info(int device, DeviceInfo* info);
  // Control operations run on the library's threads: free them from the host's capture rules.
  void relax_this_thread();
  bool resolve_tags(const std::vector<std::string>& requested, std::set<std::string>* tags,
                    OpResult* result);
  void report_noop(const std::set<std::string>& tags,
                   const std::vector<std::shared_ptr<Region>>& claimed, OpResult* result);
  void fail(OpResult* result, std::string code, std::string message);
  // Opens the gate when no region is asleep or moving (atomically with claims, so a sleep that
  // has claimed regions keeps it closed).
  void open_gate_if_all_awake();
  void release_handles(const std::vector<std::shared_ptr<Region>>& regions,
                       const std::vector<PhysHandle>& handles, const std::vector<bool>& mapped);

  Driver& driver_;
  const Options options_;
  Gate* const gate_;
  Tagger tagger_;
  PolicyTable policies_;
  RegionTable table_;
  MirrorPreparer preparer_;
  std::atomic<std::uint64_t> next_id_{1};

  std::mutex devices_mu_;
  std::array<DeviceInfo, kMaxDevices> devices_{};
  std::set<int> used_devices_;

  std::mutex op_mu_;  // one sleep or wake at a time; never taken by allocation or free
  Copier copier_;     // guarded by op_mu_

  mutable std::mutex meta_mu_;
  std::set<std::string> known_tags_;
  std::map<std::string, TagTimes> tag_times_;
  struct ForeignLedger {
    std::unordered_map<std::uint64_t, std::size_t> entries;
    std::size_t bytes = 0;
  };
  std::array<ForeignLedger, kForeignKinds> foreign_;
  struct AppHandle {
    std::size_t bytes = 0;
    int device = 0;
    std::vector<unsigned char> prop;
    std::string tag;
    std::uint64_t id = 0;
    std::uintptr_t call_site = 0;
    std::shared_ptr<const CallSite> site;
    std::string rule;
    // The program's references (create, retains, less releases). While adopted they are counted
    // in AdoptedHandle::refs and copied back here when the handle leaves the region table; an
    // adopted handle is mapped, so drop_if_gone() never needs them meanwhile.
    int refs = 1;
    PhysHandle current = 0;  // the driver's handle now, when not adopted (0: lost)
    int mappings = 0;
    DevicePtr va = 0;  // its mapping when it has exactly one
    std::size_t map_size = 0;
    std::size_t map_offset = 0;
    std::vector<std::pair<int, int>> access;  // (device, flags) granted on that mapping
    const char* pinned = nullptr;             // why it may never sleep
    std::shared_ptr<AdoptedHandle> adopted;   // set while it is a region at `va`
  };
  // Guards the program's handles; taken before the region table's lock, never under op_mu_.
  mutable std::mutex app_mu_;
  std::unordered_map<std::uint64_t, AppHandle> app_handles_;
  std::map<DevicePtr, std::uint64_t> app_mappings_;  // mapping address -> key
  // Caller holds app_mu_.
  void adopt_if_eligible(AppHandle& h, std::uint64_t key);
  bool unadopt(AppHandle& h, bool* asleep);
  void drop_if_gone(std::uint64_t key);

  // Lock order: op_mu_, then peers_mu_. Allocation holds peers_mu_ from granting access until
  // the region is in the table, so a concurrent grant_peer never misses it.
  mutable std::mutex peers_mu_;
  std::set<std::pair<int, int>> peers_;            // (owner, accessor)
  std::vector<int> accessors_of(int owner) const;  // caller holds peers_mu_
  // Grants each of `accessors` access to a mapped range; failures are logged, not fatal.
  void grant_accessors(DevicePtr va, std::size_t size, const std::vector<int>& accessors);
};

}  // namespace gpusleep

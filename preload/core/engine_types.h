// What the engine's operations take and give back: requests, results, failures and status.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/failure.h"
#include "core/gate.h"
#include "core/host_budget.h"
#include "core/policy.h"

namespace gpusleep {

// Why an operation failed.
struct OpError {
  Failure code = Failure::kInternal;
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
  std::size_t pageable_bytes = 0;  // sleep: of copied_bytes, those put in pageable host memory
  std::size_t spilled_bytes = 0;   // sleep: of copied_bytes, those written to disk
  double seconds = 0;
  double sync_seconds = 0;  // sleep: waiting for the device to go idle
  double copy_seconds = 0;  // mirror preparation and copies
  double map_seconds = 0;   // sleep: unmap and release; wake: create, map and set access
  double wait_seconds = 0;  // wake: waiting for device memory held elsewhere

  // Marks the result failed with `code` and says why.
  void fail(Failure code, std::string message) {
    ok = false;
    error.code = code;
    error.message = std::move(message);
  }
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
  // Seconds to wait for device memory held elsewhere: each region is mapped and restored as soon
  // as its memory can be had. At the deadline the wake is still all or nothing. 0: fail at once.
  double wait_seconds = 0;
};

// The longest wait a wake may ask for: a request never holds the operation lock for longer.
inline constexpr double kMaxWakeWaitSeconds = 3600;

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
  std::size_t pageable_bytes = 0;  // contents of its asleep regions in pageable host memory
  std::size_t spilled_bytes = 0;   // and on disk
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

// The sleep or wake in flight, as status shows it while it runs.
struct OperationStatus {
  std::string op;                 // "sleep" or "wake"
  std::vector<std::string> tags;  // the tags whose regions it moves
  std::size_t regions = 0;
  std::size_t total_bytes = 0;  // device bytes of those regions
  std::size_t done_bytes = 0;   // of those, copied and released (sleep) or restored (wake) so far
  double seconds = 0;           // since it started
  bool waiting = false;         // wake: waiting for device memory held elsewhere
};

struct EngineStatus {
  std::optional<OperationStatus> operation;  // none in flight: nullopt
  std::string default_tag;
  std::string phase_tag;
  std::vector<TagStatus> tags;
  std::vector<DeviceStatus> devices;
  std::size_t passthrough_allocations = 0;
  std::size_t passthrough_bytes = 0;
  std::vector<UnsleepableStatus> unsleepable;  // every kind, with zero counts too
  std::vector<PeerGrant> peers;
  std::optional<GateStats> gate;  // null: the engine has no gate
  BudgetUsage host;               // the host budget and what is held in each tier
  std::string spill_dir;          // the disk tier's directory ("": none)
  std::string spill_problem;      // why a configured spill directory is not used ("": none)
};

enum class AllocOutcome {
  kManaged,      // *out is a region
  kPassthrough,  // caller must use the real allocator
  kOutOfMemory,  // no device memory; the caller reports cudaErrorMemoryAllocation
};

enum class FreeOutcome { kFreed, kNotOurs };

}  // namespace gpusleep

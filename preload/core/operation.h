// Sleep and wake of tags. Each is written as its named phases (sleep.cpp, wake.cpp) on top of
// the start they share (Operation): one operation at a time, the request's tags resolved, their
// regions claimed. Each is all-or-nothing: on failure every region is left as it was.
#pragma once

#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "core/engine_types.h"
#include "core/region.h"

namespace gpusleep {

struct EngineParts;

// Engine::sleep and Engine::wake (engine.h).
OpResult sleep_tags(EngineParts& parts, const SleepRequest& request);
OpResult wake_tags(EngineParts& parts, const WakeRequest& request);

// What an operation did to `regions`, by tag; `policies[i]` is what it did with regions[i].
std::vector<TagReport> tag_reports(const std::vector<std::shared_ptr<Region>>& regions,
                                   const std::vector<Policy>& policies);

// The start sleep and wake share. Holds the operation lock for its lifetime; on the way out it
// opens the gate if nothing is left asleep.
class Operation {
 public:
  // `name` ("sleep" or "wake") is what status shows while it runs.
  Operation(EngineParts& parts, const char* name);
  ~Operation();
  Operation(const Operation&) = delete;
  Operation& operator=(const Operation&) = delete;

 protected:
  // Resolves the requested tags and moves their regions from `from` to the busy state `to`. False
  // when there is nothing more to do: a tag was refused (the result says why), or no region of
  // them is in `from` (the result lists the tags as no-ops).
  bool claim(const std::vector<std::string>& requested, RegionState from, RegionState to);
  // Seconds since the operation started.
  double elapsed() const;

  EngineParts& parts_;
  OpResult result_;
  std::vector<std::shared_ptr<Region>> claimed_;
  std::size_t claimed_bytes_ = 0;  // the mapped bytes of claimed_

 private:
  std::lock_guard<std::mutex> op_lock_;
  const char* const name_;
  const double started_;
};

}  // namespace gpusleep

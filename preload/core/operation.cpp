// The start sleep and wake share.
#include "core/operation.h"

#include "base/clock.h"
#include "core/engine_parts.h"

namespace gpusleep {

Operation::Operation(EngineParts& parts, const char* name)
    : parts_((parts.relax_this_thread(), parts)),
      op_lock_(parts.op_mu),
      name_(name),
      started_(monotonic_seconds()) {}

Operation::~Operation() {
  parts_.progress.end();
  parts_.open_gate_if_all_awake();
}

double Operation::elapsed() const {
  return monotonic_seconds() - started_;
}

bool Operation::claim(const std::vector<std::string>& requested, RegionState from, RegionState to) {
  std::set<std::string> tags;
  if (!parts_.tags.resolve(requested, &tags, &result_)) return false;
  claimed_ = parts_.table.claim([&](const Region& r) { return tags.count(r.tag) > 0; }, from, to);
  std::set<std::string> acted;
  for (const auto& r : claimed_)
    acted.insert(r->tag);
  for (const std::string& t : tags) {
    if (acted.count(t) == 0) result_.noop.push_back(t);
  }
  if (claimed_.empty()) {
    result_.seconds = elapsed();
    return false;
  }
  for (const auto& r : claimed_)
    claimed_bytes_ += r->mapped;
  parts_.progress.begin(name_, std::vector<std::string>(acted.begin(), acted.end()),
                        claimed_.size(), claimed_bytes_);
  return true;
}

}  // namespace gpusleep

// Tag decisions.
#include "tagger.h"

namespace gpusleep {

TagDecision Tagger::decide(const AllocationSite& /*site*/) const {
  std::lock_guard<std::mutex> lock(mu_);
  return TagDecision{phase_tag_.empty() ? default_tag_ : phase_tag_, false};
}

void Tagger::set_phase_tag(std::string tag) {
  std::lock_guard<std::mutex> lock(mu_);
  phase_tag_ = std::move(tag);
}

std::string Tagger::phase_tag() const {
  std::lock_guard<std::mutex> lock(mu_);
  return phase_tag_;
}

}  // namespace gpusleep

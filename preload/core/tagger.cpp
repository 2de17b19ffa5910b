// Tag decisions.
#include "core/tagger.h"

namespace gpusleep {

TagDecision Tagger::decide(const AllocationSite& site, SiteContext* context) const {
  std::shared_ptr<const RuleSet> rules;
  std::string phase;
  {
    std::lock_guard<std::mutex> lock(mu_);
    rules = rules_;
    phase = phase_tag_;
  }
  if (rules != nullptr) {
    AllocationFacts facts{site.size, site.device, site.sequence, phase};
    if (const Rule* r = rules->match(facts, context)) {
      return TagDecision{r->passthrough ? std::string() : r->tag, r->passthrough, r->name};
    }
  }
  return TagDecision{phase.empty() ? default_tag_ : phase, false, ""};
}

void Tagger::set_rules(std::shared_ptr<const RuleSet> rules) {
  std::lock_guard<std::mutex> lock(mu_);
  rules_ = std::move(rules);
}

std::shared_ptr<const RuleSet> Tagger::rules() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rules_;
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

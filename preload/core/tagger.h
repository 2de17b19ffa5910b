// The tagger: the one place that decides which tag a new allocation gets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "core/rules.h"
#include "core/site_context.h"

namespace gpusleep {

// What is known about an allocation when it is tagged.
struct AllocationSite {
  std::size_t size = 0;
  int device = 0;
  std::uint64_t sequence = 0;    // the region id it will get
  std::uintptr_t call_site = 0;  // return address in the caller of the allocation function
};

struct TagDecision {
  std::string tag;
  bool passthrough = false;  // leave the allocation to the real allocator
  std::string rule;          // the rule that decided ("" : the phase or default tag)
};

class Tagger {
 public:
  explicit Tagger(std::string default_tag) : default_tag_(std::move(default_tag)) {}

  // The first matching rule's decision; else the phase tag when one is set, else the default
  // tag. `context` answers what rules ask about the call site (null: rules that need it do not
  // match). Thread-safe.
  TagDecision decide(const AllocationSite& site, SiteContext* context = nullptr) const;

  // Replaces the rules (null: none).
  void set_rules(std::shared_ptr<const RuleSet> rules);
  std::shared_ptr<const RuleSet> rules() const;

  // Tags every later allocation with `tag` (phase tagging); an empty tag returns to the default.
  // Precondition: `tag` is empty or valid_tag_name(tag).
  void set_phase_tag(std::string tag);
  std::string phase_tag() const;
  const std::string& default_tag() const { return default_tag_; }

 private:
  const std::string default_tag_;
  mutable std::mutex mu_;
  std::string phase_tag_;
  std::shared_ptr<const RuleSet> rules_;
};

}  // namespace gpusleep

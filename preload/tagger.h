// The tagger: the one place that decides which tag a new allocation gets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

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
};

class Tagger {
 public:
  explicit Tagger(std::string default_tag) : default_tag_(std::move(default_tag)) {}

  // The phase tag when one is set, else the default tag. Thread-safe.
  TagDecision decide(const AllocationSite& site) const;

  // Tags every later allocation with `tag` (phase tagging); an empty tag returns to the default.
  // Precondition: `tag` is empty or valid_tag_name(tag).
  void set_phase_tag(std::string tag);
  std::string phase_tag() const;
  const std::string& default_tag() const { return default_tag_; }

 private:
  const std::string default_tag_;
  mutable std::mutex mu_;
  std::string phase_tag_;
};

}  // namespace gpusleep

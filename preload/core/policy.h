// Per-tag sleep policies: what happens to a region's contents when it sleeps.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace gpusleep {

enum class Policy {
  kOffload,  // contents copied to a host mirror at sleep, restored at wake
  kDiscard,  // contents dropped at sleep; wake maps fresh memory
  kSpill,    // contents written to a spill file on disk at sleep (spill.h), read back at wake
};

const char* policy_name(Policy policy);
// Accepts "offload", "discard" and "spill". Returns false (and leaves *out) otherwise.
bool parse_policy(std::string_view text, Policy* out);

// Tag → policy. Built-in defaults: kv_cache discards, every other tag offloads. Overrides (from the
// GPUSLEEP_POLICY option or a control request) replace the default for one tag. Thread-safe.
class PolicyTable {
 public:
  Policy for_tag(const std::string& tag) const;
  void set(const std::string& tag, Policy policy);
  // Tags with an explicit entry (override or built-in), in name order.
  std::map<std::string, Policy> entries() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, Policy> overrides_;
};

// Parses "tag=policy[,tag=policy...]" into *out. On failure returns false and says why in *error.
bool parse_policy_list(std::string_view text, std::map<std::string, Policy>* out,
                       std::string* error);

// A tag name: 1 to 64 characters from [A-Za-z0-9_.:-].
bool valid_tag_name(std::string_view tag);

}  // namespace gpusleep

// Tagging rules: an ordered list, first match wins. Each rule matches on what is known when an
// allocation is made and decides its tag (and the tag's policy) or leaves it to the CUDA
// allocator. Parsed from JSON (docs/tagging.md); a rule set that does not parse is refused whole,
// with the rule and field at fault named, and the one in force stays.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "core/site_context.h"
#include "core/policy.h"

namespace gpusleep {

struct PyFrameMatcher {
  // Each present pattern must match (std::regex_search) the same frame; some frame must match.
  std::optional<std::regex> module, qualname, file;  // file is matched against "file:line"
  std::string text;                                  // as written, for describing the rule
};

struct Rule {
  std::string name;  // as given, or "rule N"
  // Matchers: every one present must match.
  std::vector<PyFrameMatcher> python;  // all of them (each on some frame)
  std::optional<std::regex> native;    // some native frame's demangled symbol
  std::optional<std::uint64_t> size_min, size_max;
  std::vector<int> devices;  // empty: any
  std::optional<std::uint64_t> sequence_min, sequence_max;
  std::optional<std::regex> phase;  // the phase tag, "" when none is set
  std::optional<bool> capturing;
  // Action.
  bool passthrough = false;
  std::string tag;
  std::optional<Policy> policy;

  bool needs_python() const { return !python.empty(); }
  bool needs_native() const { return native.has_value(); }
};

struct AllocationFacts {
  std::size_t size = 0;
  int device = 0;
  std::uint64_t sequence = 0;
  std::string phase_tag;
};

class RuleSet {
 public:
  // Parses a rule set ({"rules": [...]} or a bare list). On failure returns null and says why in
  // *error, naming the rule and the field.
  static std::shared_ptr<const RuleSet> parse(const std::string& json_text, std::string* error);

  // The first rule that matches, or null.
  const Rule* match(const AllocationFacts& facts, SiteContext* context) const;

  const std::vector<Rule>& rules() const { return rules_; }
  const std::string& source() const { return source_; }  // the JSON it was parsed from
  bool needs_python() const;

 private:
  std::vector<Rule> rules_;
  std::string source_;
};

// Reads and parses a rules file (at most 1 MiB). On failure says why, naming the file.
bool load_rules_file(const std::string& path, std::shared_ptr<const RuleSet>* out,
                     std::string* error);

}  // namespace gpusleep

// Tagging rules: an ordered list, first match wins. Each rule matches on what is known when an
// allocation is made and decides its tag (and the tag's policy) or leaves it to the CUDA
// allocator. Parsed from JSON (docs/tagging.md); a rule set that does not parse is refused whole,
// with the rule and field at fault named, and the one in force stays. Patterns are core/pattern.h's
// (linear time); what each matches is computed once per distinct frame, symbol or phase tag and
// kept with the rule set.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/pattern.h"
#include "core/policy.h"
#include "core/site_context.h"

namespace gpusleep {

struct PyFrameMatcher {
  // Each present pattern must match (Pattern::search) the same frame; some frame must match.
  std::optional<Pattern> module, qualname, file;  // file is matched against "file:line"
  std::string text;                               // as written, for describing the rule
};

struct Rule {
  std::string name;  // as given, or "rule N"
  // Matchers: every one present must match.
  std::vector<PyFrameMatcher> python;  // all of them (each on some frame)
  std::optional<Pattern> native;       // some native frame's demangled symbol
  std::optional<std::uint64_t> size_min, size_max;
  std::vector<int> devices;  // empty: any
  std::optional<std::uint64_t> sequence_min, sequence_max;
  std::optional<Pattern> phase;  // the phase tag, "" when none is set
  std::optional<bool> capturing;
  // Action.
  bool passthrough = false;
  std::string tag;
  std::optional<Policy> policy;
  // Where this rule's patterns sit in the rule set's cached results.
  std::size_t python_first = 0, native_index = 0, phase_index = 0;

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
  static constexpr std::size_t kMaxRules = 1000;
  // All patterns' states together: what a new frame costs to match (docs/reliability.md)
  static constexpr std::size_t kMaxTotalStates = 8000;
  static constexpr std::size_t kMaxCached = 4096;  // cached results of each kind

  // Parses a rule set ({"rules": [...]} or a bare list), at most kMaxDepth levels deep. On failure
  // returns null and says why in *error, naming the rule and the field.
  static std::shared_ptr<const RuleSet> parse(const std::string& json_text, std::string* error);
  // The same from a parsed document (a request's field), which is not serialized to be read.
  static std::shared_ptr<const RuleSet> parse(const nlohmann::json& doc, std::string* error);

  RuleSet();
  ~RuleSet();

  // The first rule that matches, or null. Thread-safe.
  const Rule* match(const AllocationFacts& facts, SiteContext* context) const;

  // Frames, symbols and phase tags whose results were computed rather than found in the cache.
  std::uint64_t cache_misses() const;

  const std::vector<Rule>& rules() const { return rules_; }
  const std::string& source() const { return source_; }  // the JSON it was parsed from
  bool needs_python() const;

 private:
  struct Cache;
  using Results = std::vector<bool>;  // one entry per pattern of a kind, in rule order
  // What the patterns of each kind say about each subject: from the cache, else computed (without
  // the cache's lock) and kept while the cache has room, else kept in *spill. The pointers live as
  // long as the set and *spill.
  std::vector<const Results*> python_results(const std::vector<PyFrame>& frames,
                                             std::deque<Results>* spill) const;
  std::vector<const Results*> native_results(const std::vector<std::string>& symbols,
                                             std::deque<Results>* spill) const;

  std::vector<Rule> rules_;
  std::vector<const PyFrameMatcher*> python_;  // every rule's, in order
  std::vector<const Pattern*> native_, phase_;
  std::string source_;
  std::unique_ptr<Cache> cache_;
};

// Reads and parses a rules file (at most 1 MiB). On failure says why, naming the file.
bool load_rules_file(const std::string& path, std::shared_ptr<const RuleSet>* out,
                     std::string* error);

}  // namespace gpusleep

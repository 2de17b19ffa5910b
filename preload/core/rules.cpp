// Rule parsing and matching.
#include "core/rules.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <mutex>
#include <set>
#include <unordered_map>

#include "base/json_reader.h"

#include "core/options.h"

namespace gpusleep {
namespace {

using Json = nlohmann::json;

class RuleError {
 public:
  explicit RuleError(std::string message) : message_(std::move(message)) {}
  const std::string& message() const { return message_; }

 private:
  std::string message_;
};

void check_fields(const Json& obj, const std::set<std::string>& allowed, const std::string& where) {
  for (const auto& [key, value] : obj.items()) {
    if (allowed.count(key) == 0) throw RuleError(where + ": unknown field \"" + key + "\"");
  }
}

Pattern compile(const Json& value, const std::string& where) {
  if (!value.is_string()) throw RuleError(where + ": must be a string (a regular expression)");
  const std::string& text = value.get_ref<const std::string&>();
  std::string why;
  std::optional<Pattern> p = Pattern::compile(text, &why);
  if (!p) {
    const std::string shown = text.size() > 64 ? text.substr(0, 64) + "..." : text;
    throw RuleError(where + ": invalid regular expression \"" + shown + "\": " + why +
                    " (docs/tagging.md lists the syntax)");
  }
  return std::move(*p);
}

std::uint64_t byte_count(const Json& value, const std::string& where) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>();
  if (value.is_number_integer() && value.get<std::int64_t>() >= 0) {
    return static_cast<std::uint64_t>(value.get<std::int64_t>());
  }
  std::size_t n = 0;
  if (value.is_string() && parse_size(value.get<std::string>(), &n)) return n;
  throw RuleError(where + ": must be a byte count (a number, or a string such as \"512M\")");
}

std::uint64_t count(const Json& value, const std::string& where) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>();
  if (value.is_number_integer() && value.get<std::int64_t>() >= 0) {
    return static_cast<std::uint64_t>(value.get<std::int64_t>());
  }
  throw RuleError(where + ": must be a non-negative integer");
}

void range(const Json& value, const std::string& where, bool bytes,
           std::optional<std::uint64_t>* lo, std::optional<std::uint64_t>* hi) {
  if (!value.is_object())
    throw RuleError(where + ": must be an object {\"min\": ..., \"max\": ...}");
  check_fields(value, {"min", "max"}, where);
  if (value.contains("min")) {
    *lo = bytes ? byte_count(value["min"], where + ".min") : count(value["min"], where + ".min");
  }
  if (value.contains("max")) {
    *hi = bytes ? byte_count(value["max"], where + ".max") : count(value["max"], where + ".max");
  }
  if (!lo->has_value() && !hi->has_value()) throw RuleError(where + ": needs min or max");
  if (*lo && *hi && **lo > **hi) throw RuleError(where + ": min is greater than max");
}

PyFrameMatcher python_matcher(const Json& value, const std::string& where) {
  if (!value.is_object()) {
    throw RuleError(where + ": must be an object with module, qualname and/or file");
  }
  check_fields(value, {"module", "qualname", "file"}, where);
  PyFrameMatcher m;
  if (value.contains("module")) m.module = compile(value["module"], where + ".module");
  if (value.contains("qualname")) m.qualname = compile(value["qualname"], where + ".qualname");
  if (value.contains("file")) m.file = compile(value["file"], where + ".file");
  if (!m.module && !m.qualname && !m.file) {
    throw RuleError(where + ": needs module, qualname or file");
  }
  m.text = value.dump();  // an object of strings only, checked above
  return m;
}

Rule parse_rule(const Json& value, std::size_t index) {
  std::string where = "rule " + std::to_string(index + 1);
  if (!value.is_object()) throw RuleError(where + ": must be an object");
  Rule rule;
  rule.name = where;
  if (value.contains("name")) {
    if (!value["name"].is_string()) throw RuleError(where + ": name: must be a string");
    rule.name = value["name"].get<std::string>();
    where += " (\"" + rule.name + "\")";
  }
  check_fields(value, {"name", "match", "tag", "policy", "passthrough", "comment"}, where);
  if (value.contains("match")) {
    const Json& m = value["match"];
    const std::string mw = where + ": match";
    if (!m.is_object()) throw RuleError(mw + ": must be an object");
    check_fields(m, {"python", "native", "size", "device", "sequence", "phase", "capturing"}, mw);
    if (m.contains("python")) {
      const Json& p = m["python"];
      if (p.is_array()) {
        if (p.empty()) throw RuleError(mw + ".python: an empty list");
        for (std::size_t i = 0; i < p.size(); ++i)
          rule.python.push_back(python_matcher(p[i], mw + ".python[" + std::to_string(i) + "]"));
      } else {
        rule.python.push_back(python_matcher(p, mw + ".python"));
      }
    }
    if (m.contains("native")) rule.native = compile(m["native"], mw + ".native");
    if (m.contains("size")) range(m["size"], mw + ".size", true, &rule.size_min, &rule.size_max);
    if (m.contains("sequence")) {
      range(m["sequence"], mw + ".sequence", false, &rule.sequence_min, &rule.sequence_max);
    }
    if (m.contains("device")) {
      const Json& d = m["device"];
      Json list = d.is_array() ? d : Json::array({d});
      for (const Json& x : list) {
        if (!x.is_number_integer() || x.get<std::int64_t>() < 0 || x.get<std::int64_t>() > 1023) {
          throw RuleError(mw + ".device: must be a device number or a list of them");
        }
        rule.devices.push_back(x.get<int>());
      }
      if (rule.devices.empty()) throw RuleError(mw + ".device: an empty list");
    }
    if (m.contains("phase")) rule.phase = compile(m["phase"], mw + ".phase");
    if (m.contains("capturing")) {
      if (!m["capturing"].is_boolean()) throw RuleError(mw + ".capturing: must be true or false");
      rule.capturing = m["capturing"].get<bool>();
    }
  }
  if (value.contains("passthrough")) {
    if (!value["passthrough"].is_boolean())
      throw RuleError(where + ": passthrough: must be true or false");
    rule.passthrough = value["passthrough"].get<bool>();
  }
  if (value.contains("tag")) {
    if (!value["tag"].is_string() || !valid_tag_name(value["tag"].get<std::string>())) {
      throw RuleError(where + ": tag: must be 1 to 64 characters from [A-Za-z0-9_.:-]");
    }
    rule.tag = value["tag"].get<std::string>();
  }
  if (value.contains("policy")) {
    Policy p;
    if (!value["policy"].is_string() || !parse_policy(value["policy"].get<std::string>(), &p)) {
      throw RuleError(where + ": policy: must be \"offload\" or \"discard\"");
    }
    rule.policy = p;
  }
  if (rule.passthrough == !rule.tag.empty()) {
    throw RuleError(where + ": needs exactly one action: \"tag\" or \"passthrough\": true");
  }
  if (rule.passthrough && rule.policy) {
    throw RuleError(where + ": policy: a pass-through rule has no policy");
  }
  return rule;
}

bool frame_matches(const PyFrameMatcher& m, const PyFrame& f, const std::string& file_line) {
  if (m.module && !m.module->search(f.module)) return false;
  if (m.qualname && !m.qualname->search(f.qualname)) return false;
  if (m.file && !m.file->search(file_line)) return false;
  return true;
}

std::size_t states(const std::optional<Pattern>& p) {
  return p ? p->states() : 0;
}

}  // namespace

struct RuleSet::Cache {
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using Map = std::unordered_map<std::string, Results, Hash, std::equal_to<>>;
  std::mutex mu;
  Map python, native, phase;  // entries are never removed: pointers to them stay valid
  std::atomic<std::uint64_t> misses{0};

  // The results for each key, computing the missing ones with compute(index).
  template <typename Compute>
  std::vector<const Results*> lookup(Map& map, const std::vector<std::string_view>& keys,
                                     std::deque<Results>* spill, Compute compute) {
    std::vector<const Results*> out(keys.size(), nullptr);
    bool missing = false;
    {
      std::lock_guard<std::mutex> lock(mu);
      for (std::size_t i = 0; i < keys.size(); ++i) {
        auto it = map.find(keys[i]);
        if (it != map.end()) out[i] = &it->second;
        missing = missing || it == map.end();
      }
    }
    if (!missing) return out;
    std::vector<Results> computed(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (out[i] == nullptr) computed[i] = compute(i);
    }
    std::lock_guard<std::mutex> lock(mu);
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (out[i] != nullptr) continue;
      ++misses;
      auto it = map.find(keys[i]);
      if (it == map.end() && map.size() < kMaxCached) {
        it = map.emplace(std::string(keys[i]), std::move(computed[i])).first;
      }
      if (it != map.end()) {
        out[i] = &it->second;
      } else {
        spill->push_back(std::move(computed[i]));
        out[i] = &spill->back();
      }
    }
    return out;
  }
};

RuleSet::RuleSet() : cache_(std::make_unique<Cache>()) {}
RuleSet::~RuleSet() = default;

std::shared_ptr<const RuleSet> RuleSet::parse(const std::string& json_text, std::string* error) {
  Json doc;
  std::string why;
  if (!parse_json(json_text, &doc, &why)) {
    *error = "not valid JSON: " + why;
    return nullptr;
  }
  return parse(doc, error);
}

std::shared_ptr<const RuleSet> RuleSet::parse(const Json& doc, std::string* error) {
  try {
    const Json* list = &doc;
    if (doc.is_object()) {
      check_fields(doc, {"rules", "version", "comment", "name"}, "rule set");
      if (doc.contains("version") && doc["version"] != 1) {
        throw RuleError("rule set: version: only 1 is understood");
      }
      if (!doc.contains("rules")) throw RuleError("rule set: no \"rules\" list");
      list = &doc["rules"];
    }
    if (!list->is_array()) throw RuleError("rule set: \"rules\" must be a list");
    if (list->size() > kMaxRules) throw RuleError("rule set: more than 1000 rules");
    auto set = std::make_shared<RuleSet>();
    std::size_t total_states = 0;
    for (std::size_t i = 0; i < list->size(); ++i) {
      set->rules_.push_back(parse_rule((*list)[i], i));
      const Rule& r = set->rules_.back();
      total_states += states(r.native) + states(r.phase);
      for (const PyFrameMatcher& m : r.python)
        total_states += states(m.module) + states(m.qualname) + states(m.file);
      if (total_states > kMaxTotalStates) {
        throw RuleError("rule " + std::to_string(i + 1) + " (\"" + r.name +
                        "\"): the rule set's regular expressions together are too complex (more "
                        "than " +
                        std::to_string(kMaxTotalStates) + " states)");
      }
    }
    // One tag, one policy.
    for (std::size_t i = 0; i < set->rules_.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        const Rule& a = set->rules_[j];
        const Rule& b = set->rules_[i];
        if (a.policy && b.policy && a.tag == b.tag && *a.policy != *b.policy) {
          throw RuleError("rule " + std::to_string(i + 1) + " (\"" + b.name + "\"): policy: tag " +
                          b.tag + " already has policy " + policy_name(*a.policy) + " in rule " +
                          std::to_string(j + 1));
        }
      }
    }
    for (Rule& r : set->rules_) {
      r.python_first = set->python_.size();
      for (const PyFrameMatcher& m : r.python)
        set->python_.push_back(&m);
      r.native_index = set->native_.size();
      if (r.native) set->native_.push_back(&*r.native);
      r.phase_index = set->phase_.size();
      if (r.phase) set->phase_.push_back(&*r.phase);
    }
    // Bounded depth (protocol::parse_json, or a request parsed the same way): not recursion
    // that a sender controls.
    set->source_ = doc.dump();
    return set;
  } catch (const RuleError& e) {
    *error = e.message();
  } catch (const std::exception& e) {
    *error = std::string("rule set: ") + e.what();
  }
  return nullptr;
}

std::vector<const RuleSet::Results*> RuleSet::python_results(const std::vector<PyFrame>& frames,
                                                             std::deque<Results>* spill) const {
  // A frame's key is its module, qualname and "file:line", which the file pattern is matched on.
  std::string joined;
  std::vector<std::size_t> ends;
  for (const PyFrame& f : frames) {
    joined.append(f.module).append(1, '\n').append(f.qualname).append(1, '\n');
    joined.append(f.file).append(1, ':').append(std::to_string(f.line));
    ends.push_back(joined.size());
  }
  std::vector<std::string_view> keys;
  std::size_t begin = 0;
  for (std::size_t end : ends) {
    keys.push_back(std::string_view(joined).substr(begin, end - begin));
    begin = end;
  }
  return cache_->lookup(cache_->python, keys, spill, [&](std::size_t i) {
    const PyFrame& f = frames[i];
    const std::string file_line = f.file + ":" + std::to_string(f.line);
    Results out(python_.size());
    for (std::size_t k = 0; k < python_.size(); ++k)
      out[k] = frame_matches(*python_[k], f, file_line);
    return out;
  });
}

std::vector<const RuleSet::Results*> RuleSet::native_results(
    const std::vector<std::string>& symbols, std::deque<Results>* spill) const {
  std::vector<std::string_view> keys(symbols.begin(), symbols.end());
  return cache_->lookup(cache_->native, keys, spill, [&](std::size_t i) {
    Results out(native_.size());
    for (std::size_t k = 0; k < native_.size(); ++k)
      out[k] = native_[k]->search(symbols[i]);
    return out;
  });
}

std::uint64_t RuleSet::cache_misses() const {
  return cache_->misses.load();
}

const Rule* RuleSet::match(const AllocationFacts& facts, SiteContext* context) const {
  // Each kind of subject is looked up once per allocation, when a rule first asks.
  std::deque<Results> spill;
  const Results* phase = nullptr;
  std::optional<std::vector<const Results*>> native, python;
  for (const Rule& r : rules_) {
    if (r.size_min && facts.size < *r.size_min) continue;
    if (r.size_max && facts.size > *r.size_max) continue;
    if (!r.devices.empty() &&
        std::find(r.devices.begin(), r.devices.end(), facts.device) == r.devices.end()) {
      continue;
    }
    if (r.sequence_min && facts.sequence < *r.sequence_min) continue;
    if (r.sequence_max && facts.sequence > *r.sequence_max) continue;
    if (r.phase) {
      if (phase == nullptr) {
        phase = cache_->lookup(cache_->phase, {facts.phase_tag}, &spill, [&](std::size_t) {
          Results out(phase_.size());
          for (std::size_t k = 0; k < phase_.size(); ++k)
            out[k] = phase_[k]->search(facts.phase_tag);
          return out;
        })[0];
      }
      if (!(*phase)[r.phase_index]) continue;
    }
    if (r.capturing && (context == nullptr || context->capturing() != *r.capturing)) continue;
    if (r.native) {
      if (context == nullptr) continue;
      if (!native) native = native_results(context->native_symbols(), &spill);
      if (std::none_of(native->begin(), native->end(),
                       [&](const Results* x) { return (*x)[r.native_index]; })) {
        continue;
      }
    }
    if (!r.python.empty()) {
      if (context == nullptr) continue;
      if (!python) python = python_results(context->python_frames(), &spill);
      bool all = true;
      for (std::size_t i = r.python_first; all && i < r.python_first + r.python.size(); ++i) {
        all =
            std::any_of(python->begin(), python->end(), [&](const Results* x) { return (*x)[i]; });
      }
      if (!all) continue;
    }
    return &r;
  }
  return nullptr;
}

bool load_rules_file(const std::string& path, std::shared_ptr<const RuleSet>* out,
                     std::string* error) {
  constexpr std::size_t kMaxBytes = 1 << 20;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = path + ": cannot be read";
    return false;
  }
  std::string text(kMaxBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > kMaxBytes) {
    *error = path + ": larger than 1 MiB";
    return false;
  }
  std::string why;
  auto set = RuleSet::parse(text, &why);
  if (set == nullptr) {
    *error = path + ": " + why;
    return false;
  }
  *out = std::move(set);
  return true;
}

}  // namespace gpusleep

// Rule parsing and matching.
#include "core/rules.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <set>
#include <sstream>

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

std::regex compile(const Json& value, const std::string& where) {
  if (!value.is_string()) throw RuleError(where + ": must be a string (a regular expression)");
  const std::string text = value.get<std::string>();
  if (text.size() > 1024) throw RuleError(where + ": longer than 1024 characters");
  try {
    return std::regex(text, std::regex::ECMAScript | std::regex::optimize);
  } catch (const std::regex_error& e) {
    throw RuleError(where + ": invalid regular expression \"" + text + "\": " + e.what());
  }
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
  m.text = value.dump();
  if (value.contains("module")) m.module = compile(value["module"], where + ".module");
  if (value.contains("qualname")) m.qualname = compile(value["qualname"], where + ".qualname");
  if (value.contains("file")) m.file = compile(value["file"], where + ".file");
  if (!m.module && !m.qualname && !m.file) {
    throw RuleError(where + ": needs module, qualname or file");
  }
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

bool frame_matches(const PyFrameMatcher& m, const PyFrame& f) {
  if (m.module && !std::regex_search(f.module, *m.module)) return false;
  if (m.qualname && !std::regex_search(f.qualname, *m.qualname)) return false;
  if (m.file && !std::regex_search(f.file + ":" + std::to_string(f.line), *m.file)) return false;
  return true;
}

}  // namespace

std::shared_ptr<const RuleSet> RuleSet::parse(const std::string& json_text, std::string* error) {
  constexpr std::size_t kMaxRules = 1000;
  Json doc = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    *error = "not valid JSON";
    try {
      const Json again = Json::parse(json_text);  // throws, with the parser's message
      static_cast<void>(again);
    } catch (const Json::parse_error& e) {
      *error = std::string("not valid JSON: ") + e.what();
    }
    return nullptr;
  }
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
    for (std::size_t i = 0; i < list->size(); ++i)
      set->rules_.push_back(parse_rule((*list)[i], i));
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
    set->source_ = json_text;
    return set;
  } catch (const RuleError& e) {
    *error = e.message();
  } catch (const std::exception& e) {
    *error = std::string("rule set: ") + e.what();
  }
  return nullptr;
}

bool RuleSet::needs_python() const {
  for (const Rule& r : rules_) {
    if (r.needs_python()) return true;
  }
  return false;
}

const Rule* RuleSet::match(const AllocationFacts& facts, SiteContext* context) const {
  for (const Rule& r : rules_) {
    if (r.size_min && facts.size < *r.size_min) continue;
    if (r.size_max && facts.size > *r.size_max) continue;
    if (!r.devices.empty() &&
        std::find(r.devices.begin(), r.devices.end(), facts.device) == r.devices.end()) {
      continue;
    }
    if (r.sequence_min && facts.sequence < *r.sequence_min) continue;
    if (r.sequence_max && facts.sequence > *r.sequence_max) continue;
    if (r.phase && !std::regex_search(facts.phase_tag, *r.phase)) continue;
    if (r.capturing && (context == nullptr || context->capturing() != *r.capturing)) continue;
    if (r.native) {
      if (context == nullptr) continue;
      const auto& symbols = context->native_symbols();
      if (std::none_of(symbols.begin(), symbols.end(),
                       [&](const std::string& s) { return std::regex_search(s, *r.native); })) {
        continue;
      }
    }
    if (!r.python.empty()) {
      if (context == nullptr) continue;
      const auto& frames = context->python_frames();
      bool all = std::all_of(r.python.begin(), r.python.end(), [&](const PyFrameMatcher& m) {
        return std::any_of(frames.begin(), frames.end(),
                           [&](const PyFrame& f) { return frame_matches(m, f); });
      });
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

// Policy names, defaults and parsing.
#include "core/policy.h"

namespace gpusleep {
namespace {
const std::map<std::string, Policy>& builtin_policies() {
  static const std::map<std::string, Policy> kBuiltin = {{"kv_cache", Policy::kDiscard}};
  return kBuiltin;
}
}  // namespace

const char* policy_name(Policy policy) {
  switch (policy) {
    case Policy::kDiscard:
      return "discard";
    case Policy::kSpill:
      return "spill";
    case Policy::kOffload:
      break;
  }
  return "offload";
}

bool parse_policy(std::string_view text, Policy* out) {
  if (text == "offload") {
    *out = Policy::kOffload;
    return true;
  }
  if (text == "discard") {
    *out = Policy::kDiscard;
    return true;
  }
  if (text == "spill") {
    *out = Policy::kSpill;
    return true;
  }
  return false;
}

Policy PolicyTable::for_tag(const std::string& tag) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = overrides_.find(tag);
    if (it != overrides_.end()) return it->second;
  }
  auto it = builtin_policies().find(tag);
  return it != builtin_policies().end() ? it->second : Policy::kOffload;
}

void PolicyTable::set(const std::string& tag, Policy policy) {
  std::lock_guard<std::mutex> lock(mu_);
  overrides_[tag] = policy;
}

std::map<std::string, Policy> PolicyTable::entries() const {
  std::map<std::string, Policy> out = builtin_policies();
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [tag, policy] : overrides_)
    out[tag] = policy;
  return out;
}

bool valid_tag_name(std::string_view tag) {
  if (tag.empty() || tag.size() > 64) return false;
  for (char c : tag) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool parse_policy_list(std::string_view text, std::map<std::string, Policy>* out,
                       std::string* error) {
  std::map<std::string, Policy> result;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      *error = "expected tag=policy, got '" + std::string(item) + "'";
      return false;
    }
    std::string_view tag = item.substr(0, eq);
    std::string_view name = item.substr(eq + 1);
    Policy policy;
    if (!valid_tag_name(tag)) {
      *error = "invalid tag name '" + std::string(tag) + "'";
      return false;
    }
    if (!parse_policy(name, &policy)) {
      *error = "unknown policy '" + std::string(name) + "' for tag '" + std::string(tag) +
               "' (offload, discard or spill)";
      return false;
    }
    result[std::string(tag)] = policy;
  }
  *out = std::move(result);
  return true;
}

}  // namespace gpusleep

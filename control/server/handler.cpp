// Request handlers: validate fields, call the engine, shape the reply (the read-only views,
// status and regions, are in views.cpp).
#include "server/handler.h"

#include <cerrno>
#include <set>

#include "core/engine.h"
#include "core/pattern.h"
#include "core/rules.h"
#include "protocol/operations.h"

namespace gpusleep {
namespace {

using protocol::Json;

Json op_result(const OpResult& r) {
  Json tags = Json::array();
  for (const TagReport& t : r.tags) {
    tags.push_back({{"tag", t.tag},
                    {"policy", policy_name(t.policy)},
                    {"regions", t.regions},
                    {"bytes", t.bytes}});
  }
  Json out{{"regions", r.regions},
           {"bytes", r.bytes},
           {"copied_bytes", r.copied_bytes},
           {"discarded_bytes", r.discarded_bytes},
           {"pageable_bytes", r.pageable_bytes},
           {"spilled_bytes", r.spilled_bytes},
           {"duration_ms", r.seconds * 1e3},
           {"sync_ms", r.sync_seconds * 1e3},
           {"copy_ms", r.copy_seconds * 1e3},
           {"map_ms", r.map_seconds * 1e3},
           {"wait_ms", r.wait_seconds * 1e3},
           {"tags", tags},
           {"noop", r.noop}};
  out["copy_gbps"] = r.copied_bytes > 0 && r.copy_seconds > 0
                         ? Json(static_cast<double>(r.copied_bytes) / r.copy_seconds / 1e9)
                         : Json(nullptr);
  return out;
}

Json op_error(const Json& id, const OpResult& r) {
  Json details = Json::object();
  if (r.error.device >= 0) details["device"] = r.error.device;
  if (r.error.needed_bytes > 0 || r.error.free_bytes > 0) {
    details["needed_bytes"] = r.error.needed_bytes;
    details["free_bytes"] = r.error.free_bytes;
  }
  details["partial"] = op_result(r);
  return protocol::error_reply(id, r.error.code, r.error.message, details);
}

}  // namespace

Json Handler::invalid(const protocol::Request& req, const std::string& message) {
  return protocol::error_reply(req.id, Failure::kInvalidArgument, message);
}

std::string Handler::handle_line(std::string_view line) {
  try {
    protocol::Request request;
    Json error;
    if (!protocol::parse_request(line, &request, &error)) return protocol::encode(error);
    return protocol::encode(handle(request));
  } catch (const std::exception& e) {
    return protocol::encode(protocol::error_reply(nullptr, Failure::kInternal,
                                                  std::string("internal error: ") + e.what()));
  } catch (...) {
    return protocol::encode(protocol::error_reply(nullptr, Failure::kInternal, "internal error"));
  }
}

Json Handler::handle(const protocol::Request& req) {
  using Fn = Json (Handler::*)(const protocol::Request&);
  // By protocol::Op, in the order of protocol::kOperations.
  static constexpr Fn kHandlers[] = {&Handler::status, &Handler::regions, &Handler::sleep,
                                     &Handler::wake,   &Handler::tag,     &Handler::policy,
                                     &Handler::rules,  &Handler::retag};
  static_assert(std::size(kHandlers) == protocol::kOperationCount);
  const protocol::OperationSpec* spec = protocol::find_operation(req.op);
  if (spec == nullptr) {
    std::string known;
    for (const protocol::OperationSpec& o : protocol::kOperations)
      known += (known.empty() ? "" : ", ") + std::string(o.name);
    return protocol::error_reply(
        req.id, Failure::kUnknownOp,
        "unknown op '" + req.op.substr(0, 64) + "' (known: " + known + ")");
  }
  if (engine_ == nullptr && spec->op != protocol::Op::kStatus) {
    return protocol::error_reply(req.id, Failure::kUnavailable,
                                 "the library is not managing memory in this process");
  }
  try {
    return (this->*kHandlers[static_cast<std::size_t>(spec->op)])(req);
  } catch (const std::exception& e) {
    return protocol::error_reply(req.id, Failure::kInternal,
                                 std::string("internal error: ") + e.what());
  }
}

Json Handler::rules(const protocol::Request& req) {
  std::string error;
  std::optional<std::string> action;
  if (!protocol::check_fields(req.body, {"action", "rules"}, &error) ||
      !protocol::get_string(req.body, "action", &action, &error)) {
    return invalid(req, error);
  }
  const std::string what = action.value_or("show");
  if (what == "set") {
    auto it = req.body.find("rules");
    if (it == req.body.end() || !(it->is_array() || it->is_object())) {
      return invalid(req, "field 'rules': expected a rule set (a list, or {\"rules\": [...]})");
    }
    std::string why;
    auto set = RuleSet::parse(*it, &why);
    if (set == nullptr) {
      return protocol::error_reply(req.id, Failure::kInvalidRules,
                                   why + "; the rules in force are unchanged");
    }
    engine_->set_rules(std::move(set));
  } else if (what == "reload") {
    if (rules_file_.empty()) {
      return invalid(req,
                     "no rules file to reload (the process was started without GPUSLEEP_RULES)");
    }
    std::shared_ptr<const RuleSet> set;
    std::string why;
    if (!load_rules_file(rules_file_, &set, &why)) {
      return protocol::error_reply(req.id, Failure::kInvalidRules,
                                   why + "; the rules in force are unchanged");
    }
    engine_->set_rules(std::move(set));
  } else if (what == "clear") {
    engine_->set_rules(nullptr);
  } else if (what != "show") {
    return invalid(req, "field 'action': expected \"show\", \"set\", \"reload\" or \"clear\"");
  } else if (req.body.contains("rules")) {
    return invalid(req, "field 'rules' goes with action \"set\"");
  }
  std::shared_ptr<const RuleSet> current = engine_->rules();
  Json names = Json::array();
  Json source = nullptr;
  if (current != nullptr) {
    for (const Rule& r : current->rules()) {
      names.push_back({{"name", r.name},
                       {"action", r.passthrough ? "passthrough" : "tag"},
                       {"tag", r.passthrough ? Json(nullptr) : Json(r.tag)},
                       {"policy", r.policy ? Json(policy_name(*r.policy)) : Json(nullptr)}});
    }
    source = Json::parse(current->source(), nullptr, false);
  }
  return protocol::ok_reply(
      req.id, Json{{"rules", names},
                   {"source", source},
                   {"file", rules_file_.empty() ? Json(nullptr) : Json(rules_file_)}});
}

Json Handler::retag(const protocol::Request& req) {
  std::string error;
  std::optional<std::string> tag;
  std::optional<std::string> call_site;
  if (!protocol::check_fields(req.body, {"tag", "ids", "range", "call_site"}, &error) ||
      !protocol::get_string(req.body, "tag", &tag, &error) ||
      !protocol::get_string(req.body, "call_site", &call_site, &error)) {
    return invalid(req, error);
  }
  if (!tag) return invalid(req, "field 'tag' is required");
  if (!valid_tag_name(*tag)) {
    return invalid(req, "field 'tag': a tag is 1-64 characters from A-Z a-z 0-9 _ . : -");
  }
  const int selectors = (req.body.contains("ids") ? 1 : 0) + (req.body.contains("range") ? 1 : 0) +
                        (call_site ? 1 : 0);
  if (selectors != 1) return invalid(req, "give exactly one of 'ids', 'range' and 'call_site'");
  // The selection is computed here, on a snapshot, without any lock that sleep or wake takes: a
  // pattern or a long list costs this connection's time only. The engine then applies it by id.
  const std::vector<RegionInfo> infos = engine_->regions();
  std::set<std::uint64_t> selected;
  if (auto it = req.body.find("ids"); it != req.body.end()) {
    if (!it->is_array() || it->empty() || it->size() > 100000) {
      return invalid(req, "field 'ids': expected a non-empty list of region ids");
    }
    for (const Json& v : *it) {
      if (!v.is_number_unsigned()) return invalid(req, "field 'ids': expected region ids");
      selected.insert(v.get<std::uint64_t>());
    }
    std::set<std::uint64_t> known;
    for (const RegionInfo& r : infos)
      known.insert(r.id);
    std::string missing;
    for (std::uint64_t id : selected) {
      if (known.count(id) == 0) missing += (missing.empty() ? "" : ", ") + std::to_string(id);
      if (missing.size() > 200) break;
    }
    if (!missing.empty()) {
      return invalid(req, "no region with id " + missing + "; nothing was retagged");
    }
  } else if (auto it = req.body.find("range"); it != req.body.end()) {
    std::uint64_t start = 0;
    std::uint64_t end = 0;
    auto address = [](const Json& v, std::uint64_t* out) {
      if (v.is_number_unsigned()) {
        *out = v.get<std::uint64_t>();
        return true;
      }
      if (!v.is_string()) return false;
      const std::string s = v.get<std::string>();
      if (s.empty() || s.size() > 18) return false;
      char* e = nullptr;
      errno = 0;
      unsigned long long n = std::strtoull(s.c_str(), &e, 0);
      if (errno != 0 || e == s.c_str() || *e != '\0') return false;
      *out = n;
      return true;
    };
    if (!it->is_object() || !it->contains("start") || !it->contains("end") ||
        !address((*it)["start"], &start) || !address((*it)["end"], &end) || start >= end) {
      return invalid(req,
                     "field 'range': expected {\"start\": ADDRESS, \"end\": ADDRESS} with "
                     "start below end (numbers or \"0x...\" strings)");
    }
    // Regions that lie within [start, end).
    for (const RegionInfo& r : infos)
      if (r.va >= start && r.va + r.mapped <= end) selected.insert(r.id);
  } else {
    std::string why;
    std::optional<Pattern> pattern = Pattern::compile(*call_site, &why);
    if (!pattern) {
      return invalid(req, "field 'call_site': regular expression " + why +
                              " (docs/tagging.md lists the syntax)");
    }
    for (const RegionInfo& r : infos) {
      bool hit = pattern->search(call_site_key(r, 1));
      for (std::size_t i = 0; !hit && r.site != nullptr && i < r.site->python.size(); ++i)
        hit = pattern->search(describe_frame(r.site->python[i]));
      if (hit) selected.insert(r.id);
    }
  }
  auto [count, bytes] =
      engine_->retag([&selected](const RegionInfo& r) { return selected.count(r.id) != 0; }, *tag);
  return protocol::ok_reply(req.id, Json{{"tag", *tag}, {"regions", count}, {"bytes", bytes}});
}

Json Handler::sleep(const protocol::Request& req) {
  std::string error;
  std::optional<std::vector<std::string>> tags;
  std::optional<std::string> policy_text;
  std::optional<bool> gate;
  if (!protocol::check_fields(req.body, {"tags", "policy", "gate"}, &error) ||
      !protocol::get_string_list(req.body, "tags", &tags, &error) ||
      !protocol::get_string(req.body, "policy", &policy_text, &error) ||
      !protocol::get_bool(req.body, "gate", &gate, &error)) {
    return invalid(req, error);
  }
  SleepRequest request;
  if (tags) request.tags = *tags;
  request.gate = gate.value_or(true);
  if (policy_text) {
    Policy p;
    if (!parse_policy(*policy_text, &p)) {
      return invalid(req, "field 'policy': expected \"offload\", \"discard\" or \"spill\"");
    }
    request.policy = p;
  }
  OpResult r = engine_->sleep(request);
  return r.ok ? protocol::ok_reply(req.id, op_result(r)) : op_error(req.id, r);
}

Json Handler::wake(const protocol::Request& req) {
  std::string error;
  std::optional<std::vector<std::string>> tags;
  if (!protocol::check_fields(req.body, {"tags", "wait"}, &error) ||
      !protocol::get_string_list(req.body, "tags", &tags, &error)) {
    return invalid(req, error);
  }
  WakeRequest request;
  if (tags) request.tags = *tags;
  if (auto it = req.body.find("wait"); it != req.body.end()) {
    const double wait = it->is_number() ? it->get<double>() : -1;
    if (!(wait >= 0 && wait <= kMaxWakeWaitSeconds)) {
      return invalid(req, "field 'wait': expected seconds from 0 to " +
                              std::to_string(static_cast<int>(kMaxWakeWaitSeconds)));
    }
    request.wait_seconds = wait;
  }
  OpResult r = engine_->wake(request);
  return r.ok ? protocol::ok_reply(req.id, op_result(r)) : op_error(req.id, r);
}

Json Handler::tag(const protocol::Request& req) {
  std::string error;
  std::optional<std::string> tag;
  bool clear = false;
  if (!protocol::check_fields(req.body, {"tag", "clear"}, &error) ||
      !protocol::get_string(req.body, "tag", &tag, &error)) {
    return invalid(req, error);
  }
  if (auto it = req.body.find("clear"); it != req.body.end()) {
    if (!it->is_boolean()) return invalid(req, "field 'clear': expected true or false");
    clear = it->get<bool>();
  }
  if (clear && tag) return invalid(req, "give either 'tag' or 'clear', not both");
  std::string previous = engine_->phase_tag();
  if (tag || clear) {
    std::string next = clear ? "" : *tag;
    if (!clear && !valid_tag_name(next)) {
      return invalid(req, "field 'tag': a tag is 1-64 characters from A-Z a-z 0-9 _ . : -");
    }
    engine_->set_phase_tag(next);
  }
  std::string current = engine_->phase_tag();
  return protocol::ok_reply(
      req.id, Json{{"phase_tag", current.empty() ? Json(nullptr) : Json(current)},
                   {"previous", previous.empty() ? Json(nullptr) : Json(previous)},
                   {"default_tag", engine_->default_tag()},
                   {"effective_tag", current.empty() ? engine_->default_tag() : current}});
}

Json Handler::policy(const protocol::Request& req) {
  std::string error;
  std::optional<std::string> tag;
  std::optional<std::string> policy_text;
  if (!protocol::check_fields(req.body, {"tag", "policy"}, &error) ||
      !protocol::get_string(req.body, "tag", &tag, &error) ||
      !protocol::get_string(req.body, "policy", &policy_text, &error)) {
    return invalid(req, error);
  }
  if (tag && !valid_tag_name(*tag)) return invalid(req, "field 'tag': invalid tag name");
  if (policy_text) {
    if (!tag) return invalid(req, "field 'tag' is required to set a policy");
    Policy p;
    if (!parse_policy(*policy_text, &p)) {
      return invalid(req, "field 'policy': expected \"offload\", \"discard\" or \"spill\"");
    }
    engine_->set_policy(*tag, p);
  }
  Json policies = Json::object();
  for (const auto& [t, p] : engine_->policies())
    policies[t] = policy_name(p);
  if (tag) policies[*tag] = policy_name(engine_->policy_for(*tag));
  return protocol::ok_reply(req.id, Json{{"policies", policies}, {"default", "offload"}});
}

}  // namespace gpusleep

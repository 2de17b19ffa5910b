// Request handlers: validate fields, call the engine, shape the reply.
#include "server/handler.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <functional>
#include <iterator>
#include <map>
#include <set>

#include "base/version.h"
#include "core/engine.h"
#include "core/pattern.h"
#include "core/rules.h"
#include "protocol/operations.h"

namespace gpusleep {
namespace {

using protocol::Json;

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// What `regions` shows as a region's call site, and groups by: its innermost `depth` Python frames
// ("a < b": a called from b), else the native caller of the allocation function.
std::string call_site_key(const RegionInfo& r, int depth) {
  if (r.site != nullptr && !r.site->python.empty()) {
    std::string out;
    for (int i = 0; i < depth && i < static_cast<int>(r.site->python.size()); ++i) {
      if (i > 0) out += " < ";
      out += describe_frame(r.site->python[static_cast<std::size_t>(i)]);
    }
    return out;
  }
  return r.call_site != 0 ? describe_native(r.call_site) : std::string();
}

std::string read_small_file(const char* path, std::size_t max) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::string out(max, '\0');
  ssize_t n = ::read(fd, out.data(), max);
  ::close(fd);
  out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return out;
}

Json process_info() {
  char exe[4096];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  std::string cmdline = read_small_file("/proc/self/cmdline", 4096);
  for (char& c : cmdline)
    c = c == '\0' ? ' ' : c;
  while (!cmdline.empty() && cmdline.back() == ' ')
    cmdline.pop_back();
  return Json{{"pid", static_cast<int>(::getpid())},
              {"exe", n > 0 ? std::string(exe, static_cast<std::size_t>(n)) : ""},
              {"cmdline", cmdline}};
}

Json optional_ms(const std::optional<double>& ms) {
  return ms ? Json(*ms) : Json(nullptr);
}

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

Json invalid(const protocol::Request& req, const std::string& message) {
  return protocol::error_reply(req.id, Failure::kInvalidArgument, message);
}

}  // namespace

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

// Byte counts of each tag that status also sums over tags.
constexpr const char* kTotals[] = {"regions",      "bytes",          "resident_bytes",
                                   "asleep_bytes", "mirror_bytes",   "mirror_pending_bytes",
                                   "pinned_bytes", "pageable_bytes", "spilled_bytes"};

Json Handler::status(const protocol::Request& req) {
  std::string error;
  if (!protocol::check_fields(req.body, {}, &error)) return invalid(req, error);
  Json out{{"process", process_info()},
           {"version", kVersionString},
           {"protocol", protocol::kVersion},
           {"managing", engine_ != nullptr}};
  if (engine_ == nullptr) return protocol::ok_reply(req.id, out);
  EngineStatus s = engine_->status();
  Json tags = Json::array();
  Json totals = Json::object();
  for (const char* k : kTotals)
    totals[k] = 0;
  for (const TagStatus& t : s.tags) {
    std::string state = t.regions == 0          ? "empty"
                        : t.asleep_regions == 0 ? "awake"
                        : t.awake_regions == 0  ? "asleep"
                                                : "mixed";
    tags.push_back({{"tag", t.tag},
                    {"policy", policy_name(t.policy)},
                    {"state", state},
                    {"regions", t.regions},
                    {"bytes", t.bytes},
                    {"resident_bytes", t.resident_bytes},
                    {"asleep_bytes", t.asleep_bytes},
                    {"mirror_bytes", t.mirror_bytes},
                    {"mirror_pending_bytes", t.mirror_pending_bytes},
                    {"pinned_bytes", t.mirror_bytes},
                    {"pageable_bytes", t.pageable_bytes},
                    {"spilled_bytes", t.spilled_bytes},
                    {"last_sleep_ms", optional_ms(t.last_sleep_ms)},
                    {"last_wake_ms", optional_ms(t.last_wake_ms)}});
    for (const char* k : kTotals)
      totals[k] = totals[k].get<std::size_t>() + tags.back()[k].get<std::size_t>();
  }
  Json devices = Json::array();
  for (const DeviceStatus& d : s.devices) {
    Json dev{{"device", d.device}};
    dev["free_bytes"] = d.known ? Json(d.free_bytes) : Json(nullptr);
    dev["total_bytes"] = d.known ? Json(d.total_bytes) : Json(nullptr);
    devices.push_back(dev);
  }
  if (s.operation) {
    const OperationStatus& op = *s.operation;
    out["operation"] = {{"op", op.op},
                        {"tags", op.tags},
                        {"regions", op.regions},
                        {"total_bytes", op.total_bytes},
                        {"done_bytes", op.done_bytes},
                        {"elapsed_ms", op.seconds * 1e3},
                        {"waiting_for_memory", op.waiting}};
  } else {
    out["operation"] = nullptr;
  }
  out["default_tag"] = s.default_tag;
  out["phase_tag"] = s.phase_tag.empty() ? Json(nullptr) : Json(s.phase_tag);
  out["tags"] = tags;
  out["totals"] = totals;
  out["devices"] = devices;
  out["passthrough"] = {{"allocations", s.passthrough_allocations}, {"bytes", s.passthrough_bytes}};
  out["host"] = {
      {"budget_bytes", s.host.limit},
      {"pinned_bytes", s.host.here.pinned},
      {"pageable_bytes", s.host.here.pageable},
      {"spilled_bytes", s.host.here.spilled},
      {"node_pinned_bytes", s.host.node.pinned},
      {"node_pageable_bytes", s.host.node.pageable},
      {"node_spilled_bytes", s.host.node.spilled},
      {"processes", s.host.processes},
      {"shared", s.host.shared},
      {"spill_dir", s.spill_dir.empty() ? Json(nullptr) : Json(s.spill_dir)},
      {"spill_problem", s.spill_problem.empty() ? Json(nullptr) : Json(s.spill_problem)}};
  Json unsleepable = Json::array();
  for (const UnsleepableStatus& u : s.unsleepable) {
    unsleepable.push_back({{"kind", u.kind},
                           {"allocations", u.allocations},
                           {"bytes", u.bytes},
                           {"reason", u.reason}});
  }
  out["unsleepable"] = unsleepable;
  Json peers = Json::array();
  for (const PeerGrant& p : s.peers)
    peers.push_back({{"accessor", p.accessor}, {"owner", p.owner}});
  out["peers"] = peers;
  if (s.gate) {
    const GateStats& g = *s.gate;
    out["gate"] = {{"mode", gate_mode_name(g.mode)},
                   {"closed", g.closed},
                   {"waiting", g.waiting},
                   {"waits", g.waits},
                   {"longest_wait_ms", g.longest_wait_s * 1e3},
                   {"wakes_on_demand", g.wakes_on_demand},
                   {"wake_failures", g.wake_failures},
                   {"threads", g.threads},
                   {"calls", g.calls},
                   {"membarrier", g.membarrier}};
  } else {
    out["gate"] = nullptr;
  }
  return protocol::ok_reply(req.id, out);
}

Json Handler::regions(const protocol::Request& req) {
  std::string error;
  std::optional<std::vector<std::string>> tags;
  if (!protocol::check_fields(req.body, {"tags", "stacks", "group", "depth"}, &error) ||
      !protocol::get_string_list(req.body, "tags", &tags, &error)) {
    return invalid(req, error);
  }
  std::optional<bool> stacks_field;
  std::optional<bool> group_field;
  if (!protocol::get_bool(req.body, "stacks", &stacks_field, &error) ||
      !protocol::get_bool(req.body, "group", &group_field, &error)) {
    return invalid(req, error);
  }
  const bool stacks = stacks_field.value_or(false);
  const bool group = group_field.value_or(false);
  int depth = 1;
  if (auto it = req.body.find("depth"); it != req.body.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<std::int64_t>() < 1 || it->get<std::int64_t>() > 64) {
      return invalid(req, "field 'depth': expected an integer from 1 to 64");
    }
    depth = it->get<int>();
  }
  std::vector<RegionInfo> infos = engine_->regions();
  std::sort(infos.begin(), infos.end(),
            [](const RegionInfo& a, const RegionInfo& b) { return a.id < b.id; });
  Json list = Json::array();
  std::map<std::string, Json> groups;
  for (const RegionInfo& r : infos) {
    if (tags && !tags->empty() && std::find(tags->begin(), tags->end(), r.tag) == tags->end()) {
      continue;
    }
    if (group) {
      std::string key = call_site_key(r, depth);
      Json& g = groups[key];
      if (g.is_null()) {
        g = Json{{"call_site", key}, {"regions", 0}, {"bytes", 0}, {"tags", Json::object()}};
      }
      g["regions"] = g["regions"].get<std::size_t>() + 1;
      g["bytes"] = g["bytes"].get<std::size_t>() + r.mapped;
      Json& t = g["tags"][r.tag];
      t = t.is_null() ? 1 : t.get<std::size_t>() + 1;
      continue;
    }
    bool asleep = r.state == RegionState::kAsleep || r.state == RegionState::kWaking;
    Json entry{{"id", r.id},
               {"address", hex(r.va)},
               {"size", r.size},
               {"mapped_bytes", r.mapped},
               {"device", r.device},
               {"tag", r.tag},
               {"state", region_state_name(r.state)},
               {"policy", policy_name(asleep ? r.slept_policy : engine_->policy_for(r.tag))},
               {"mirror_bytes", r.mirror_bytes},
               {"call_site", call_site_key(r, 1)},
               {"rule", r.rule.empty() ? Json(nullptr) : Json(r.rule)},
               {"adopted", r.adopted},
               {"created_at", r.created_at}};
    if (stacks) {
      Json py = Json::array();
      Json native = Json::array();
      if (r.site != nullptr) {
        for (const PyFrame& f : r.site->python)
          py.push_back(describe_frame(f));
        for (std::uintptr_t pc : r.site->native)
          native.push_back(describe_native(pc));
      }
      entry["python_stack"] = py;
      entry["native_stack"] = native;
    }
    list.push_back(std::move(entry));
  }
  if (group) {
    Json out = Json::array();
    for (auto& [key, g] : groups)
      out.push_back(std::move(g));
    std::sort(out.begin(), out.end(), [](const Json& a, const Json& b) {
      return a["bytes"].get<std::size_t>() > b["bytes"].get<std::size_t>();
    });
    return protocol::ok_reply(req.id, Json{{"groups", out}, {"depth", depth}});
  }
  return protocol::ok_reply(req.id, Json{{"regions", list}});
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

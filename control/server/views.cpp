// The handler's read-only views, status and regions: what the engine reports, shaped for the
// reply. Neither takes a lock that a sleep or wake holds.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <string>

#include "base/version.h"
#include "core/engine.h"
#include "protocol/operations.h"
#include "server/handler.h"

namespace gpusleep {
namespace {

using protocol::Json;

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
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

// Byte counts of each tag that status also sums over tags.
constexpr const char* kTotals[] = {"regions",      "bytes",          "resident_bytes",
                                   "asleep_bytes", "mirror_bytes",   "mirror_pending_bytes",
                                   "pinned_bytes", "pageable_bytes", "spilled_bytes"};

}  // namespace

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

}  // namespace gpusleep

// CLI formatting. Replies are read defensively: a field of an unexpected type prints as "?".
#include "cli/format.h"

#include <algorithm>
#include <cstdio>

#include "base/bytes.h"

namespace gpusleep::cli {
namespace {

using protocol::Json;

std::string str(const Json& j, const char* key, const char* fallback = "?") {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (it->is_string()) return it->get<std::string>();
  return it->dump();
}

const Json& field(const Json& j, const char* key) {
  static const Json kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

std::string count_text(const Json& v) {
  return v.is_number() ? v.dump() : "?";
}

}  // namespace

std::string Table::render(const std::string& indent) const {
  std::vector<std::size_t> width;
  for (const auto& row : rows_) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (std::size_t i = 0; i < row.size(); ++i)
      width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line = indent;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ')
      line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string bytes_text(const Json& v) {
  if (!v.is_number_unsigned() && !v.is_number_integer()) return "-";
  return format_bytes(v.get<std::size_t>());
}

std::string ms_text(const Json& v) {
  if (!v.is_number()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f ms", v.get<double>());
  return buf;
}

namespace {

// The sleep or wake in flight in a status result (null: none), as "sleeping 38%" or, in full,
// "sleeping weights, kv_cache: 12.00 MiB of 32.00 MiB, 0.4 s so far".
std::string operation_text(const Json& op, bool full) {
  if (!op.is_object()) return "";
  const std::string verb = str(op, "op") == "sleep" ? "sleeping" : "waking";
  const Json& done = field(op, "done_bytes");
  const Json& total = field(op, "total_bytes");
  if (!full) {
    if (!done.is_number_unsigned() || !total.is_number_unsigned() || total.get<double>() <= 0) {
      return verb;
    }
    const double percent = std::min(100.0, 100.0 * done.get<double>() / total.get<double>());
    return verb + " " + std::to_string(static_cast<int>(percent)) + "%";
  }
  std::string tags;
  for (const Json& t : field(op, "tags"))
    if (t.is_string()) tags += (tags.empty() ? "" : ", ") + t.get<std::string>();
  std::string out = verb + (tags.empty() ? "" : " " + tags) + ": " + bytes_text(done) + " of " +
                    bytes_text(total);
  const Json& ms = field(op, "elapsed_ms");
  if (ms.is_number()) {
    char buf[48];
    std::snprintf(buf, sizeof buf, ", %.1f s so far", ms.get<double>() / 1e3);
    out += buf;
  }
  if (field(op, "waiting_for_memory").is_boolean() && field(op, "waiting_for_memory").get<bool>()) {
    out += ", waiting for device memory";
  }
  return out;
}

}  // namespace

std::string format_status(int pid, const Json& r) {
  std::string out = "pid " + std::to_string(pid);
  const Json& proc = field(r, "process");
  std::string cmd = str(proc, "cmdline", "");
  if (!cmd.empty()) out += "  " + cmd.substr(0, 100);
  out += "\n";
  if (!field(r, "managing").is_boolean() || !field(r, "managing").get<bool>()) {
    return out + "  not managing memory (disabled, or no CUDA driver)\n";
  }
  out += "  phase tag: " + str(r, "phase_tag", "none") + " (default tag: " + str(r, "default_tag") +
         ")\n";
  if (std::string op = operation_text(field(r, "operation"), true); !op.empty()) {
    out += "  now: " + op + "\n";
  }
  for (const Json& d : field(r, "devices")) {
    out += "  device " + str(d, "device") + ": " + bytes_text(field(d, "free_bytes")) +
           " free of " + bytes_text(field(d, "total_bytes")) + "\n";
  }
  const Json& host = field(r, "host");
  if (host.is_object()) {
    out += "  host memory: " + bytes_text(field(host, "pinned_bytes")) + " pinned, " +
           bytes_text(field(host, "pageable_bytes")) + " pageable, " +
           bytes_text(field(host, "spilled_bytes")) +
           " on disk; node: " + bytes_text(field(host, "node_pinned_bytes")) + " pinned of a " +
           bytes_text(field(host, "budget_bytes")) + " budget by " +
           count_text(field(host, "processes")) + " processes\n";
  }
  Table t({"TAG", "POLICY", "STATE", "REGIONS", "RESIDENT", "ASLEEP", "MIRROR", "PAGEABLE",
           "ON DISK", "LAST SLEEP", "LAST WAKE"});
  for (const Json& tag : field(r, "tags")) {
    t.add({str(tag, "tag"), str(tag, "policy"), str(tag, "state"),
           count_text(field(tag, "regions")), bytes_text(field(tag, "resident_bytes")),
           bytes_text(field(tag, "asleep_bytes")), bytes_text(field(tag, "mirror_bytes")),
           bytes_text(field(tag, "pageable_bytes")), bytes_text(field(tag, "spilled_bytes")),
           ms_text(field(tag, "last_sleep_ms")), ms_text(field(tag, "last_wake_ms"))});
  }
  out += t.render("  ");
  const Json& unsleepable = field(r, "unsleepable");
  if (unsleepable.is_array()) {
    for (const Json& u : unsleepable) {
      if (!field(u, "bytes").is_number() || field(u, "bytes").get<std::size_t>() == 0) continue;
      out += "  cannot sleep: " + bytes_text(field(u, "bytes")) + " in " +
             count_text(field(u, "allocations")) + " allocations, " + str(u, "reason") + "\n";
    }
  } else {
    const Json& pt = field(r, "passthrough");
    out += "  not managed (passed through): " + count_text(field(pt, "allocations")) +
           " allocations, " + bytes_text(field(pt, "bytes")) + "\n";
  }
  for (const Json& p : field(r, "peers")) {
    out += "  peer access: device " + str(p, "accessor") + " uses device " + str(p, "owner") +
           "'s regions\n";
  }
  const Json& gate = field(r, "gate");
  if (gate.is_object() && (field(gate, "closed") == true || field(gate, "waits") != 0)) {
    out += "  gate (" + str(gate, "mode") +
           "): " + (field(gate, "closed") == true ? "closed, " : "open, ") +
           count_text(field(gate, "waiting")) + " threads waiting; " +
           count_text(field(gate, "waits")) + " calls waited, the longest " +
           ms_text(field(gate, "longest_wait_ms")) + "\n";
  }
  return out;
}

std::string format_regions(int pid, const Json& r) {
  std::string out = "pid " + std::to_string(pid) + "\n";
  if (field(r, "groups").is_array()) {
    Table t({"REGIONS", "BYTES", "TAGS", "CALL SITE"});
    for (const Json& g : field(r, "groups")) {
      std::string tags;
      for (const auto& [tag, n] : field(g, "tags").items())
        tags += (tags.empty() ? "" : ",") + tag + "=" + count_text(n);
      t.add({count_text(field(g, "regions")), bytes_text(field(g, "bytes")), tags,
             str(g, "call_site", "")});
    }
    if (field(r, "groups").empty()) return out + "  no regions\n";
    return out + t.render("  ");
  }
  Table t({"ID", "ADDRESS", "SIZE", "DEV", "TAG", "STATE", "POLICY", "MIRROR", "CALL SITE"});
  std::size_t n = 0;
  std::string stacks;
  for (const Json& reg : field(r, "regions")) {
    ++n;
    t.add({str(reg, "id"), str(reg, "address"), bytes_text(field(reg, "mapped_bytes")),
           str(reg, "device"), str(reg, "tag"), str(reg, "state"), str(reg, "policy"),
           bytes_text(field(reg, "mirror_bytes")), str(reg, "call_site", "")});
    const Json& py = field(reg, "python_stack");
    const Json& native = field(reg, "native_stack");
    if (py.is_array() || native.is_array()) {
      stacks += "  region " + str(reg, "id") + " (tag " + str(reg, "tag") +
                (field(reg, "rule").is_string() ? ", rule " + str(reg, "rule") : "") + "):\n";
      for (const Json& f : py)
        stacks += "    py  " + (f.is_string() ? f.get<std::string>() : "?") + "\n";
      for (const Json& f : native)
        stacks += "    c   " + (f.is_string() ? f.get<std::string>() : "?") + "\n";
    }
  }
  if (n == 0) return out + "  no regions\n";
  return out + t.render("  ") + stacks;
}

std::string format_rules(int pid, const Json& r) {
  std::string out = "pid " + std::to_string(pid) + ": ";
  const Json& rules = field(r, "rules");
  if (!rules.is_array() || rules.empty()) return out + "no tagging rules\n";
  out += std::to_string(rules.size()) + " tagging rules" +
         (field(r, "file").is_string() ? " (file " + str(r, "file") + ")" : "") + "\n";
  Table t({"#", "NAME", "ACTION"});
  std::size_t i = 0;
  for (const Json& rule : rules) {
    std::string action =
        str(rule, "action") == "passthrough"
            ? std::string("pass through")
            : "tag " + str(rule, "tag") +
                  (field(rule, "policy").is_string() ? " (" + str(rule, "policy") + ")" : "");
    t.add({std::to_string(++i), str(rule, "name"), action});
  }
  return out + t.render("  ");
}

std::string format_retag(int pid, const Json& r) {
  return "pid " + std::to_string(pid) + ": retagged " + count_text(field(r, "regions")) +
         " regions (" + bytes_text(field(r, "bytes")) + ") " + str(r, "tag") + "\n";
}

std::string format_sleep_wake(int pid, const char* verb, const Json& r) {
  std::string out = "pid " + std::to_string(pid) + ": ";
  const Json& tags = field(r, "tags");
  if (tags.empty()) {
    out += "nothing to do";
  } else {
    out += verb;
    bool first = true;
    for (const Json& t : tags) {
      out += first ? " " : ", ";
      first = false;
      std::size_t n = field(t, "regions").is_number() ? field(t, "regions").get<std::size_t>() : 0;
      out += str(t, "tag") + " (" + str(t, "policy") + ", " + std::to_string(n) +
             (n == 1 ? " region, " : " regions, ") + bytes_text(field(t, "bytes")) + ")";
    }
    out += " in " + ms_text(field(r, "duration_ms"));
    const Json& gbps = field(r, "copy_gbps");
    if (gbps.is_number()) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "; copied %s at %.1f GB/s",
                    bytes_text(field(r, "copied_bytes")).c_str(), gbps.get<double>());
      out += buf;
    }
  }
  const Json& noop = field(r, "noop");
  if (noop.is_array() && !noop.empty()) {
    out += tags.empty() ? " (already " : "; already ";
    out += std::string(verb) == "slept" ? "asleep: " : "awake: ";
    bool first = true;
    for (const Json& t : noop) {
      out += (first ? "" : ", ") + (t.is_string() ? t.get<std::string>() : std::string("?"));
      first = false;
    }
    if (tags.empty()) out += ")";
  }
  return out + "\n";
}

std::string format_tag(int pid, const Json& r) {
  return "pid " + std::to_string(pid) + ": new allocations are tagged " + str(r, "effective_tag") +
         " (phase tag: " + str(r, "phase_tag", "none") + ", was: " + str(r, "previous", "none") +
         ")\n";
}

std::string format_policy(int pid, const Json& r) {
  std::string out = "pid " + std::to_string(pid) + ":";
  for (const auto& [tag, policy] : field(r, "policies").items()) {
    out += " " + tag + "=" + (policy.is_string() ? policy.get<std::string>() : "?");
  }
  return out + " (other tags: " + str(r, "default") + ")\n";
}

std::string format_error(int pid, const Json& e) {
  return "pid " + std::to_string(pid) + ": error " + str(e, "code") + ": " + str(e, "message") +
         "\n";
}

std::string format_ps(const std::vector<PsRow>& rows) {
  // A NOW column only while some process has a sleep or wake in flight.
  bool busy = false;
  for (const PsRow& row : rows)
    busy = busy || field(row.status, "operation").is_object();
  std::vector<std::string> head = {"PID", "PPID", "DEVICES", "REGIONS", "RESIDENT", "ASLEEP"};
  if (busy) head.push_back("NOW");
  head.push_back("COMMAND");
  Table t(head);
  for (const PsRow& row : rows) {
    const Json& totals = field(row.status, "totals");
    std::string devices;
    for (const Json& d : field(row.status, "devices"))
      devices += (devices.empty() ? "" : ",") + str(d, "device");
    std::vector<std::string> cells = {std::to_string(row.pid),
                                      row.ppid > 0 ? std::to_string(row.ppid) : "?",
                                      devices.empty() ? "-" : devices,
                                      count_text(field(totals, "regions")),
                                      bytes_text(field(totals, "resident_bytes")),
                                      bytes_text(field(totals, "asleep_bytes"))};
    if (busy) {
      std::string now = operation_text(field(row.status, "operation"), false);
      cells.push_back(now.empty() ? "-" : now);
    }
    cells.push_back(str(field(row.status, "process"), "cmdline", "?"));
    t.add(cells);
  }
  return t.render();
}

}  // namespace gpusleep::cli

// `gpusleep doctor`: memory left in `default`, grouped by call site, with the rules that would tag
// it.
#include "cli/doctor.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <map>
#include <optional>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "cli/format.h"

namespace gpusleep::cli {
namespace {

using protocol::Json;

struct Frame {
  std::string module, qualname, text;
};

struct Site {
  std::string key;    // "module:qualname", or the native call site
  std::string shown;  // the frame as the library wrote it
  std::string tag;    // the guess, "" when none
  Frame frame;
  bool python = false;
  std::uint64_t bytes = 0;
  std::uint64_t regions = 0;
};

std::string string_field(const Json& j, const char* key) {
  if (!j.is_object()) return {};
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::uint64_t number_field(const Json& j, const char* key) {
  if (!j.is_object()) return 0;
  auto it = j.find(key);
  return it != j.end() && it->is_number_unsigned() ? it->get<std::uint64_t>() : 0;
}

// "module:qualname (file:line)" -> its module and qualname.
Frame parse_frame(const std::string& text) {
  Frame f{{}, {}, text};
  std::string head = text.substr(0, text.find(" ("));
  auto colon = head.find(':');
  if (colon == std::string::npos) return f;
  f.module = head.substr(0, colon);
  f.qualname = head.substr(colon + 1);
  return f;
}

// Frames of these modules say where PyTorch or Python itself was, not the program.
bool generic_module(const std::string& module) {
  static constexpr std::array<std::string_view, 12> kPrefixes = {
      "torch",  "contextlib", "functools", "threading", "asyncio",    "concurrent",
      "typing", "importlib",  "runpy",     "ctypes",    "accelerate", "safetensors"};
  for (auto p : kPrefixes) {
    if (module == p || (module.size() > p.size() && module.compare(0, p.size(), p) == 0 &&
                        module[p.size()] == '.')) {
      return true;
    }
  }
  return false;
}

std::string lower(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool has_any(const std::string& s, std::initializer_list<std::string_view> words) {
  return std::any_of(words.begin(), words.end(),
                     [&](std::string_view w) { return s.find(w) != std::string::npos; });
}

// The function's name speaks first; the module's only when the function's says nothing.
std::string guess_tag(const Frame& f) {
  for (const std::string& name : {lower(f.qualname), lower(f.module)}) {
    if (has_any(name, {"graph", "capture"})) return "cuda_graph";
    if (has_any(name, {"cache", "kv"})) return "kv_cache";
    if (has_any(name, {"load", "weight", "param"})) return "weights";
  }
  return {};
}

Site site_of(const Json& region) {
  Site s;
  const Json* stack = nullptr;
  if (region.is_object() && region.contains("python_stack") && region["python_stack"].is_array()) {
    stack = &region["python_stack"];
  }
  std::optional<Frame> first;
  if (stack) {
    for (const auto& entry : *stack) {
      if (!entry.is_string()) continue;
      Frame f = parse_frame(entry.get<std::string>());
      if (f.module.empty() || generic_module(f.module)) continue;
      if (!first) first = f;
      if (std::string tag = guess_tag(f); !tag.empty()) {
        s.frame = f;
        s.tag = tag;
        break;
      }
    }
  }
  if (s.tag.empty() && first) s.frame = *first;
  if (!s.frame.module.empty()) {
    s.python = true;
    s.key = s.frame.module + ":" + s.frame.qualname;
    s.shown = s.frame.text;
  } else {
    s.key = s.shown = string_field(region, "call_site");
    if (s.key.empty()) s.key = s.shown = "(unknown)";
  }
  return s;
}

std::string regex_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

std::string percent(std::uint64_t part, std::uint64_t whole) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.0f%%", whole ? 100.0 * part / whole : 0.0);
  return buf;
}

}  // namespace

DoctorReport doctor(int pid, const Json& regions, const Json& status,
                    const DoctorOptions& options) {
  DoctorReport report;
  report.rules = Json{{"version", 1}, {"rules", Json::array()}};
  std::map<std::string, Site> sites;
  std::uint64_t total = 0;
  const Json empty = Json::array();
  const Json& list =
      regions.is_object() && regions.contains("regions") && regions["regions"].is_array()
          ? regions["regions"]
          : empty;
  for (const auto& r : list) {
    std::uint64_t bytes = number_field(r, "mapped_bytes");
    if (bytes == 0) bytes = number_field(r, "size");
    total += bytes;
    bool by_rule = r.is_object() && r.contains("rule") && r["rule"].is_string();
    if (string_field(r, "tag") != "default" || by_rule) continue;
    report.default_bytes += bytes;
    Site s = site_of(r);
    auto [it, fresh] = sites.emplace(s.key, s);
    it->second.bytes += bytes;
    it->second.regions += 1;
  }
  std::vector<Site> listed, small;
  for (auto& [_, s] : sites)
    (s.bytes >= options.min_bytes ? listed : small).push_back(s);
  std::sort(listed.begin(), listed.end(),
            [](const Site& a, const Site& b) { return a.bytes > b.bytes; });
  std::uint64_t small_bytes = 0;
  for (const auto& s : small)
    small_bytes += s.bytes;

  std::string& out = report.text;
  out += "pid " + std::to_string(pid) + ": " + format_bytes(report.default_bytes) + " of " +
         format_bytes(total) + " (" + percent(report.default_bytes, total) +
         ") in default, tagged by no rule\n";
  if (listed.empty()) {
    out += "  no call site holds " + format_bytes(options.min_bytes) + " or more there\n";
  } else {
    Table table({"BYTES", "REGIONS", "GUESS", "CALL SITE"});
    for (const auto& s : listed) {
      table.add(
          {format_bytes(s.bytes), std::to_string(s.regions), s.tag.empty() ? "-" : s.tag, s.shown});
      if (s.tag.empty()) report.unguessed_bytes += s.bytes;
    }
    out += table.render("  ");
  }
  if (!small.empty()) {
    out += "  and " + format_bytes(small_bytes) + " in " + std::to_string(small.size()) +
           " smaller call sites\n";
  }
  if (status.is_object() && status.contains("unsleepable") && status["unsleepable"].is_array()) {
    for (const auto& u : status["unsleepable"]) {
      if (number_field(u, "bytes") == 0) continue;
      out += "  cannot sleep: " + format_bytes(number_field(u, "bytes")) + " (" +
             string_field(u, "kind") + ")\n";
    }
  }
  std::string retags;
  for (const auto& s : listed) {
    if (s.tag.empty()) continue;
    if (!s.python) continue;  // a native call site has no name to match that survives a rebuild
    Json match = {{"python",
                   {{"module", "^" + regex_escape(s.frame.module) + "$"},
                    {"qualname", "^" + regex_escape(s.frame.qualname) + "$"}}}};
    report.rules["rules"].push_back(
        Json{{"name", "doctor: " + s.key}, {"match", match}, {"tag", s.tag}});
    retags += "  gpusleep retag " + s.tag + " --pid " + std::to_string(pid) + " --call-site '" +
              regex_escape(s.frame.qualname) + "'\n";
  }
  if (report.unguessed_bytes > 0) {
    out += "no guess for " + format_bytes(report.unguessed_bytes) +
           ": see `gpusleep regions --stacks` and write a rule for them (docs/tagging.md)\n";
  }
  if (!retags.empty()) {
    out += "tag what is already allocated:\n" + retags;
    out +=
        "and later allocations, with these rules first (gpusleep run --rules FILE, or "
        "gpusleep rules set FILE):\n" +
        report.rules.dump(2) + "\n";
  }
  return report;
}

}  // namespace gpusleep::cli

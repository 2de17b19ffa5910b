// gpusleep: the command-line controller. Starts programs under the library, finds them, and asks
// them to report, sleep and wake.
#include <limits.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "protocol/client.h"
#include "format.h"
#include "protocol/protocol.h"
#include "protocol/runtime_dir.h"

namespace gpusleep::cli {
namespace {

using protocol::Json;

constexpr const char* kUsage = R"(usage: gpusleep COMMAND [ARGS] [OPTIONS]

Commands:
  run [--tag TAG] [--policy TAG=POLICY,...] [--preset NAME | --rules FILE]
      [--log-level LEVEL] -- CMD [ARGS...]
                          start CMD with the library preloaded (--preset: tagging
                          rules shipped for pytorch, transformers, vllm, sglang)
  ps                      list the processes running with the library
  status                  per tag: policy, state, regions, bytes resident and asleep,
                          host mirror bytes, last sleep and wake durations; devices
  regions [TAG...] [--stacks] [--group [--depth N]]
                          every region: address, size, device, tag, state, call site;
                          --stacks: its Python and native frames; --group: regions and
                          bytes per call site (its innermost N Python frames)
  retag TAG (--id N[,N...] | --range START-END | --call-site REGEX)
                          give regions the tag TAG
  sleep [TAG...] [--policy offload|discard] [--no-gate]
                          copy out (offload) or drop (discard) the TAGs' contents and
                          release their GPU memory; no TAG: every tag. The process's
                          GPU work waits until wake; --no-gate: it goes on (it must
                          leave the TAGs' memory alone)
  wake [TAG...]           map GPU memory back at the same addresses and restore
                          contents; no TAG: every tag. All or nothing.
  tag [TAG | --clear]     tag later allocations TAG (phase tagging); no TAG: show
  policy [TAG [offload|discard]]
                          show the per-tag policies, or set TAG's
  rules [show | set FILE | reload | clear]
                          show the tagging rules, replace them with FILE's, read
                          the process's GPUSLEEP_RULES file again, or drop them

Which process (every command but run and ps):
  --pid N                 the process N
  --socket PATH           the process behind a control socket
  --all                   every process running with the library, in parallel
  (none)                  the one process running with the library, if there is one

Options:
  --json                  print the replies as JSON (one object per process)
  --timeout SECONDS       give up on a reply after this long (default: no limit)
  -h, --help              this text

Environment: GPUSLEEP_RUNTIME_DIR (where sockets are), GPUSLEEP_LIBRARY (for run).
Exit status: 0 on success, 1 if any process reported an error, 2 on a usage error.
)";

struct Args {
  std::string command;
  std::vector<std::string> positional;
  std::optional<int> pid;
  std::optional<std::string> socket;
  bool all = false;
  bool json = false;
  bool clear = false;
  bool no_gate = false;
  int timeout_ms = -1;
  std::optional<std::string> policy;
  std::optional<std::string> tag_option;
  std::optional<std::string> log_level;
  std::optional<std::string> preset;
  std::optional<std::string> rules_file;
  std::optional<std::string> ids;
  std::optional<std::string> range;
  std::optional<std::string> call_site;
  bool stacks = false;
  bool group = false;
  int depth = 1;
  std::vector<std::string> run_command;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "gpusleep: %s\n(gpusleep --help for usage)\n", message.c_str());
  std::exit(2);
}

bool parse_int(const std::string& s, long lo, long hi, long* out) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s.c_str(), &end, 10);
  if (errno != 0 || end == s.c_str() || *end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

Args parse_args(int argc, char** argv) {
  Args a;
  if (argc < 2) usage_error("no command given");
  a.command = argv[1];
  if (a.command == "-h" || a.command == "--help" || a.command == "help") {
    std::fputs(kUsage, stdout);
    std::exit(0);
  }
  for (int i = 2; i < argc; ++i) {
    std::string s = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) usage_error(std::string(name) + " needs a value");
      return argv[++i];
    };
    if (s == "--") {
      if (a.command != "run") usage_error("'--' is only for run");
      for (++i; i < argc; ++i)
        a.run_command.push_back(argv[i]);
      break;
    }
    if (s == "-h" || s == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (s == "--json") {
      a.json = true;
    } else if (s == "--all") {
      a.all = true;
    } else if (s == "--clear") {
      a.clear = true;
    } else if (s == "--no-gate") {
      a.no_gate = true;
    } else if (s == "--pid") {
      long pid = 0;
      if (!parse_int(value("--pid"), 1, INT_MAX, &pid)) usage_error("--pid takes a process id");
      a.pid = static_cast<int>(pid);
    } else if (s == "--socket") {
      a.socket = value("--socket");
    } else if (s == "--timeout") {
      long secs = 0;
      if (!parse_int(value("--timeout"), 1, 86400, &secs)) usage_error("--timeout takes seconds");
      a.timeout_ms = static_cast<int>(secs * 1000);
    } else if (s == "--policy") {
      a.policy = value("--policy");
    } else if (s == "--tag") {
      a.tag_option = value("--tag");
    } else if (s == "--log-level") {
      a.log_level = value("--log-level");
    } else if (s == "--preset") {
      a.preset = value("--preset");
    } else if (s == "--rules") {
      a.rules_file = value("--rules");
    } else if (s == "--id") {
      a.ids = value("--id");
    } else if (s == "--range") {
      a.range = value("--range");
    } else if (s == "--call-site") {
      a.call_site = value("--call-site");
    } else if (s == "--stacks") {
      a.stacks = true;
    } else if (s == "--group") {
      a.group = true;
    } else if (s == "--depth") {
      long d = 0;
      if (!parse_int(value("--depth"), 1, 64, &d)) usage_error("--depth takes 1 to 64");
      a.depth = static_cast<int>(d);
    } else if (s.size() > 1 && s[0] == '-') {
      usage_error("unknown option " + s);
    } else {
      a.positional.push_back(s);
    }
  }
  int targets = (a.pid ? 1 : 0) + (a.socket ? 1 : 0) + (a.all ? 1 : 0);
  if (targets > 1) usage_error("give one of --pid, --socket and --all");
  return a;
}

struct Target {
  int pid;
  std::string socket;
};

std::vector<Target> resolve_targets(const Args& a) {
  const std::string dir = default_runtime_dir();
  if (a.socket) {
    std::string name = a.socket->substr(a.socket->find_last_of('/') + 1);
    long pid = 0;
    parse_int(name.substr(0, name.find('.')), 1, INT_MAX, &pid);
    return {Target{static_cast<int>(pid), *a.socket}};
  }
  if (a.pid) return {Target{*a.pid, socket_path(dir, *a.pid)}};
  std::vector<ProcessEntry> live = find_processes(dir, true, nullptr);
  if (live.empty()) {
    std::fprintf(stderr, "gpusleep: no process is running with gpusleep (looked in %s)\n",
                 dir.c_str());
    std::exit(1);
  }
  if (!a.all && live.size() > 1) {
    std::string pids;
    for (const auto& p : live)
      pids += " " + std::to_string(p.pid);
    usage_error("several processes run with gpusleep (" + pids.substr(1) +
                "); choose one with --pid or use --all");
  }
  std::vector<Target> out;
  for (const auto& p : live)
    out.push_back(Target{p.pid, p.socket});
  return out;
}

struct Outcome {
  bool transport_ok = false;
  std::string transport_error;
  Json reply;
};

Outcome call_one(const Target& t, const Json& request, int timeout_ms) {
  Outcome o;
  auto client = Client::connect(t.socket, &o.transport_error);
  if (client) o.transport_ok = client->call(request, &o.reply, &o.transport_error, timeout_ms);
  return o;
}

std::vector<Outcome> call_all(const std::vector<Target>& targets, const Json& request,
                              int timeout_ms) {
  std::vector<Outcome> outcomes(targets.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    threads.emplace_back([&, i] { outcomes[i] = call_one(targets[i], request, timeout_ms); });
  }
  for (auto& t : threads)
    t.join();
  return outcomes;
}

// Prints each outcome; returns the exit status.
int report(const std::vector<Target>& targets, const std::vector<Outcome>& outcomes, bool json,
           const std::function<std::string(int, const Json&)>& human) {
  int status = 0;
  Json all = Json::array();
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const Outcome& o = outcomes[i];
    int pid = targets[i].pid;
    if (!o.transport_ok) {
      status = 1;
      if (json) {
        all.push_back({{"pid", pid},
                       {"ok", false},
                       {"error", {{"code", "connection_failed"}, {"message", o.transport_error}}}});
      } else {
        std::fprintf(stderr, "pid %d: %s\n", pid, o.transport_error.c_str());
      }
      continue;
    }
    bool ok = o.reply.value("ok", false);
    if (!ok) status = 1;
    if (json) {
      Json entry = o.reply;
      entry["pid"] = pid;
      all.push_back(entry);
    } else if (ok) {
      std::fputs(human(pid, o.reply["result"]).c_str(), stdout);
    } else {
      std::fputs(format_error(pid, o.reply["error"]).c_str(), stderr);
    }
  }
  if (json) {
    std::string text = all.size() == 1 ? all[0].dump(2, ' ', false, Json::error_handler_t::replace)
                                       : all.dump(2, ' ', false, Json::error_handler_t::replace);
    std::printf("%s\n", text.c_str());
  }
  return status;
}

std::string library_path() {
  if (const char* lib = std::getenv("GPUSLEEP_LIBRARY"); lib && *lib) return lib;
  char exe[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return "";
  std::string dir(exe, static_cast<std::size_t>(n));
  dir = dir.substr(0, dir.find_last_of('/'));
  for (const char* rel :
       {"/../lib/libgpusleep.so", "/libgpusleep.so", "/../lib64/libgpusleep.so"}) {
    std::string candidate = dir + rel;
    if (::access(candidate.c_str(), R_OK) == 0) {
      char real[PATH_MAX];
      return ::realpath(candidate.c_str(), real) ? std::string(real) : candidate;
    }
  }
  return "";
}

// Where the shipped rule files are: GPUSLEEP_PRESET_DIR, next to an installed CLI, or the
// source tree it was built from.
std::string preset_path(const std::string& name) {
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') {
      usage_error("a preset name is letters, digits, '_' and '-'");
    }
  }
  std::vector<std::string> dirs;
  if (const char* d = std::getenv("GPUSLEEP_PRESET_DIR"); d && *d) dirs.push_back(d);
  char exe[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    std::string dir(exe, static_cast<std::size_t>(n));
    dir = dir.substr(0, dir.find_last_of('/'));
    dirs.push_back(dir + "/../share/gpusleep/presets");
  }
  dirs.push_back(GPUSLEEP_SOURCE_PRESET_DIR);
  for (const std::string& d : dirs) {
    std::string candidate = d + "/" + name + ".json";
    if (::access(candidate.c_str(), R_OK) == 0) {
      char real[PATH_MAX];
      return ::realpath(candidate.c_str(), real) ? std::string(real) : candidate;
    }
  }
  std::fprintf(stderr, "gpusleep: no preset '%s' (looked in %s)\n", name.c_str(),
               GPUSLEEP_SOURCE_PRESET_DIR);
  std::exit(2);
}

std::string read_file_or_exit(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    std::fprintf(stderr, "gpusleep: cannot read %s: %s\n", path.c_str(), strerror(errno));
    std::exit(1);
  }
  std::string text;
  char buf[65536];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0 && text.size() <= (1u << 20))
    text.append(buf, n);
  std::fclose(f);
  if (text.size() > (1u << 20)) {
    std::fprintf(stderr, "gpusleep: %s is larger than 1 MiB\n", path.c_str());
    std::exit(1);
  }
  return text;
}

int cmd_run(const Args& a) {
  if (a.run_command.empty()) usage_error("run needs a command after --");
  if (a.preset && a.rules_file) usage_error("give --preset or --rules, not both");
  std::string lib = library_path();
  if (lib.empty()) {
    std::fprintf(stderr, "gpusleep: cannot find libgpusleep.so; set GPUSLEEP_LIBRARY\n");
    return 1;
  }
  const char* old = std::getenv("LD_PRELOAD");
  std::string preload = lib + (old && *old ? ":" + std::string(old) : "");
  setenv("LD_PRELOAD", preload.c_str(), 1);
  if (a.tag_option) setenv("GPUSLEEP_DEFAULT_TAG", a.tag_option->c_str(), 1);
  if (a.policy) setenv("GPUSLEEP_POLICY", a.policy->c_str(), 1);
  if (a.log_level) setenv("GPUSLEEP_LOG_LEVEL", a.log_level->c_str(), 1);
  if (a.preset) setenv("GPUSLEEP_RULES", preset_path(*a.preset).c_str(), 1);
  if (a.rules_file) {
    char real[PATH_MAX];
    if (::realpath(a.rules_file->c_str(), real) == nullptr) {
      std::fprintf(stderr, "gpusleep: cannot read %s: %s\n", a.rules_file->c_str(),
                   strerror(errno));
      return 1;
    }
    setenv("GPUSLEEP_RULES", real, 1);
  }
  std::vector<char*> argv;
  for (const auto& s : a.run_command)
    argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  std::fprintf(stderr, "gpusleep: cannot run %s: %s\n", argv[0], strerror(errno));
  return 127;
}

int cmd_ps(const Args& a) {
  std::vector<std::string> removed;
  std::string dir = default_runtime_dir();
  std::vector<ProcessEntry> live = find_processes(dir, true, &removed);
  std::vector<Target> targets;
  for (const auto& p : live)
    targets.push_back(Target{p.pid, p.socket});
  std::vector<Outcome> outcomes = call_all(targets, protocol::make_request("status"), a.timeout_ms);
  if (a.json) {
    Json list = Json::array();
    for (std::size_t i = 0; i < targets.size(); ++i) {
      Json entry = outcomes[i].transport_ok ? outcomes[i].reply : Json::object();
      entry["pid"] = targets[i].pid;
      entry["socket"] = targets[i].socket;
      list.push_back(entry);
    }
    std::printf("%s\n", Json{{"processes", list}, {"removed_stale", removed}}
                            .dump(2, ' ', false, Json::error_handler_t::replace)
                            .c_str());
    return 0;
  }
  for (const auto& r : removed)
    std::fprintf(stderr, "removed stale socket %s\n", r.c_str());
  if (targets.empty()) {
    std::printf("no process is running with gpusleep (sockets in %s)\n", dir.c_str());
    return 0;
  }
  std::vector<std::pair<int, Json>> statuses;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const Outcome& o = outcomes[i];
    statuses.emplace_back(targets[i].pid, o.transport_ok && o.reply.value("ok", false)
                                              ? o.reply["result"]
                                              : Json::object());
  }
  std::fputs(format_ps(statuses).c_str(), stdout);
  return 0;
}

Json tags_field(const std::vector<std::string>& tags) {
  return tags.empty() ? Json::object() : Json{{"tags", tags}};
}

int run_command(const Args& a) {
  if (a.command == "run") return cmd_run(a);
  if (a.command == "ps") return cmd_ps(a);

  Json request;
  std::function<std::string(int, const Json&)> human;
  if (a.command == "status") {
    if (!a.positional.empty()) usage_error("status takes no arguments");
    request = protocol::make_request("status");
    human = format_status;
  } else if (a.command == "regions") {
    Json fields = tags_field(a.positional);
    if (a.stacks) fields["stacks"] = true;
    if (a.group) fields["group"] = true;
    if (a.depth != 1) {
      if (!a.group) usage_error("--depth goes with --group");
      fields["depth"] = a.depth;
    }
    request = protocol::make_request("regions", fields);
    human = format_regions;
  } else if (a.command == "retag") {
    if (a.positional.size() != 1) usage_error("retag takes one tag");
    if ((a.ids ? 1 : 0) + (a.range ? 1 : 0) + (a.call_site ? 1 : 0) != 1) {
      usage_error("retag needs one of --id, --range and --call-site");
    }
    Json fields{{"tag", a.positional[0]}};
    if (a.ids) {
      Json ids = Json::array();
      std::string rest = *a.ids;
      while (!rest.empty()) {
        std::string one = rest.substr(0, rest.find(','));
        rest = rest.find(',') == std::string::npos ? "" : rest.substr(rest.find(',') + 1);
        long id = 0;
        if (!parse_int(one, 1, LONG_MAX, &id)) usage_error("--id takes region ids: N[,N...]");
        ids.push_back(static_cast<std::uint64_t>(id));
      }
      fields["ids"] = ids;
    } else if (a.range) {
      std::size_t dash = a.range->find('-');
      if (dash == std::string::npos) usage_error("--range takes START-END (addresses)");
      fields["range"] = {{"start", a.range->substr(0, dash)}, {"end", a.range->substr(dash + 1)}};
    } else {
      fields["call_site"] = *a.call_site;
    }
    request = protocol::make_request("retag", fields);
    human = format_retag;
  } else if (a.command == "rules") {
    const std::string action = a.positional.empty() ? "show" : a.positional[0];
    Json fields{{"action", action}};
    if (action == "set") {
      if (a.positional.size() != 2) usage_error("rules set takes a file");
      Json parsed = Json::parse(read_file_or_exit(a.positional[1]), nullptr, false);
      if (parsed.is_discarded()) {
        std::fprintf(stderr, "gpusleep: %s is not valid JSON\n", a.positional[1].c_str());
        return 1;
      }
      fields["rules"] = parsed;
    } else if (a.positional.size() > 1 ||
               (action != "show" && action != "reload" && action != "clear")) {
      usage_error("rules takes show, set FILE, reload or clear");
    }
    request = protocol::make_request("rules", fields);
    human = format_rules;
  } else if (a.command == "sleep") {
    Json fields = tags_field(a.positional);
    if (a.policy) fields["policy"] = *a.policy;
    if (a.no_gate) fields["gate"] = false;
    request = protocol::make_request("sleep", fields);
    human = [](int pid, const Json& r) { return format_sleep_wake(pid, "slept", r); };
  } else if (a.command == "wake") {
    if (a.policy) usage_error("wake takes no --policy");
    request = protocol::make_request("wake", tags_field(a.positional));
    human = [](int pid, const Json& r) { return format_sleep_wake(pid, "woke", r); };
  } else if (a.command == "tag") {
    if (a.positional.size() > 1) usage_error("tag takes one tag");
    if (a.clear && !a.positional.empty()) usage_error("give a tag or --clear, not both");
    Json fields = Json::object();
    if (a.clear) fields["clear"] = true;
    if (!a.positional.empty()) fields["tag"] = a.positional[0];
    request = protocol::make_request("tag", fields);
    human = format_tag;
  } else if (a.command == "policy") {
    if (a.positional.size() > 2) usage_error("policy takes a tag and a policy");
    Json fields = Json::object();
    if (!a.positional.empty()) fields["tag"] = a.positional[0];
    if (a.positional.size() == 2) fields["policy"] = a.positional[1];
    request = protocol::make_request("policy", fields);
    human = format_policy;
  } else {
    usage_error("unknown command '" + a.command + "'");
  }
  std::vector<Target> targets = resolve_targets(a);
  return report(targets, call_all(targets, request, a.timeout_ms), a.json, human);
}

}  // namespace
}  // namespace gpusleep::cli

int main(int argc, char** argv) {
  try {
    return gpusleep::cli::run_command(gpusleep::cli::parse_args(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpusleep: %s\n", e.what());
    return 1;
  }
}

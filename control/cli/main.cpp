// gpusleep: the command-line controller. Starts programs under the library, finds them, and asks
// them to report, sleep and wake.
#include <limits.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "client.h"
#include "format.h"
#include "protocol.h"
#include "runtime_dir.h"

namespace gpusleep::cli {
namespace {

using protocol::Json;

constexpr const char* kUsage = R"(usage: gpusleep COMMAND [ARGS] [OPTIONS]

Commands:
  run [--tag TAG] [--policy TAG=POLICY,...] [--log-level LEVEL] -- CMD [ARGS...]
                          start CMD with the library preloaded
  ps                      list the processes running with the library
  status                  per tag: policy, state, regions, bytes resident and asleep,
                          host mirror bytes, last sleep and wake durations; devices
  regions [TAG...]        every region: address, size, device, tag, state, call site
  sleep [TAG...] [--policy offload|discard]
                          copy out (offload) or drop (discard) the TAGs' contents and
                          release their GPU memory; no TAG: every tag
  wake [TAG...]           map GPU memory back at the same addresses and restore
                          contents; no TAG: every tag. All or nothing.
  tag [TAG | --clear]     tag later allocations TAG (phase tagging); no TAG: show
  policy [TAG [offload|discard]]
                          show the per-tag policies, or set TAG's

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
  int timeout_ms = -1;
  std::optional<std::string> policy;
  std::optional<std::string> tag_option;
  std::optional<std::string> log_level;
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

int cmd_run(const Args& a) {
  if (a.run_command.empty()) usage_error("run needs a command after --");
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
    request = protocol::make_request("regions", tags_field(a.positional));
    human = format_regions;
  } else if (a.command == "sleep") {
    Json fields = tags_field(a.positional);
    if (a.policy) fields["policy"] = *a.policy;
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

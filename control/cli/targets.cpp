// Finding the processes a command talks to, talking to them in parallel, and reporting their
// replies in one shape.
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "cli/cli.h"
#include "cli/format.h"
#include "protocol/client.h"
#include "protocol/runtime_dir.h"

namespace gpusleep::cli {

void Report::process(int pid, const Json& result, const std::string& human, const Json& extra) {
  if (!json_) {
    std::fputs(human.c_str(), stdout);
    std::fflush(stdout);
    return;
  }
  Json entry{{"pid", pid}};
  for (const auto& [k, v] : extra.items())
    entry[k] = v;
  entry["result"] = result;
  processes_.push_back(std::move(entry));
}

void Report::error(int pid, const std::string& code, const std::string& message,
                   const Json& details) {
  Json entry{{"pid", pid > 0 ? Json(pid) : Json(nullptr)}};
  for (const auto& [k, v] : details.items())
    entry[k] = v;
  entry["code"] = code;
  entry["message"] = message;
  if (!json_) {
    std::string text = pid > 0 ? format_error(pid, Json{{"code", code}, {"message", message}})
                               : "gpusleep: " + message + "\n";
    std::fputs(text.c_str(), stderr);
  }
  errors_.push_back(std::move(entry));
}

int Report::finish(int error_status) {
  if (json_) {
    Json envelope{{"processes", processes_}, {"errors", errors_}};
    for (const auto& [k, v] : fields_.items())
      envelope[k] = v;
    std::printf("%s\n", envelope.dump(2, ' ', false, Json::error_handler_t::replace).c_str());
  }
  return errors_.empty() ? kExitOk : error_status;
}

int parent_pid(int pid) {
  // The command name (field 2) may hold spaces and parentheses: the fields after it start past
  // the last ')'.
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return 0;
  std::size_t close = line.rfind(')');
  if (close == std::string::npos || close + 4 >= line.size()) return 0;
  char state = 0;
  int ppid = 0;
  if (std::sscanf(line.c_str() + close + 1, " %c %d", &state, &ppid) != 2) return 0;
  return ppid;
}

bool descends_from(int pid, int ancestor) {
  // Bounded: a pid namespace's tree is shallow, and a racing exit only ends the walk early.
  for (int hops = 0; pid > 1 && hops < 1024; ++hops) {
    if (pid == ancestor) return true;
    pid = parent_pid(pid);
  }
  return pid == ancestor;
}

std::vector<Target> resolve_targets(const TargetOptions& o, Report* report, int* status) {
  *status = kExitFailed;
  const std::string dir = default_runtime_dir();
  if (o.socket) {
    // A socket named on the command line is the user's choice of directory; who listens on it
    // is still checked when connecting.
    std::string name = o.socket->substr(o.socket->find_last_of('/') + 1);
    int pid = std::atoi(name.substr(0, name.find('.')).c_str());
    return {Target{pid > 0 ? pid : 0, *o.socket}};
  }
  std::string why;
  if (!trusted_runtime_dir(dir, &why)) {
    report->error(0, "untrusted", why);
    return {};
  }
  if (o.pid) return {Target{*o.pid, socket_path(dir, *o.pid)}};
  std::vector<ProcessEntry> live = find_processes(dir, true, nullptr, &why);
  std::vector<Target> out;
  for (const auto& p : live) {
    if (!o.job || descends_from(p.pid, *o.job)) out.push_back(Target{p.pid, p.socket});
  }
  if (out.empty()) {
    std::string message = o.job ? "no process of job " + std::to_string(*o.job) +
                                      " (it and its descendants) runs with gpusleep"
                                : "no process is running with gpusleep";
    report->error(0, "no_process", message + " (looked in " + dir + ")", {{"runtime_dir", dir}});
    return {};
  }
  if (!o.all && !o.job && out.size() > 1) {
    Json pids = Json::array();
    std::string text;
    for (const auto& t : out) {
      pids.push_back(t.pid);
      text += (text.empty() ? "" : " ") + std::to_string(t.pid);
    }
    report->error(0, "several_processes",
                  "several processes run with gpusleep (" + text +
                      "); choose one with --pid, a job with --job, or use --all",
                  {{"pids", pids}});
    *status = kExitUsage;
    return {};
  }
  return out;
}

namespace {

Outcome call_one(const Target& t, const Json& request, int timeout_ms) {
  Outcome o;
  bool untrusted = false;
  auto client = Client::connect(t.socket, &o.error, &untrusted);
  if (!client) {
    o.code = untrusted ? "untrusted" : "connection_failed";
    return o;
  }
  o.answered = client->call(request, &o.reply, &o.error, timeout_ms);
  if (!o.answered) o.code = o.error == "no reply in time" ? "timeout" : "connection_failed";
  return o;
}

std::string seconds_text(int ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", ms / 1000.0);
  return buf;
}

}  // namespace

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

int timeout_ms(const TargetOptions& o, double default_s) {
  double s = o.timeout_s >= 0 ? o.timeout_s : default_s;
  if (s <= 0) return -1;
  return static_cast<int>(std::min(s * 1000, static_cast<double>(INT_MAX)));
}

void report_outcomes(const std::vector<Target>& targets, const std::vector<Outcome>& outcomes,
                     const std::function<std::string(int, const Json&)>& human, int timeout,
                     Report* report) {
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const Outcome& o = outcomes[i];
    const int pid = targets[i].pid;
    if (!o.answered) {
      std::string message = o.error;
      if (o.code == "timeout") {
        message = "no reply within " + seconds_text(timeout) +
                  " (the process may be stopped or busy; --timeout SECONDS waits longer, 0 for "
                  "ever)";
      }
      report->error(pid, o.code, message, {{"socket", targets[i].socket}});
      continue;
    }
    if (o.reply.value("ok", false)) {
      const Json& result = o.reply.contains("result") ? o.reply["result"] : Json::object();
      report->process(pid, result, human(pid, result));
      continue;
    }
    // The process's error object as it came: its code, message and fields (needed_bytes, ...).
    Json e = o.reply.contains("error") && o.reply["error"].is_object() ? o.reply["error"]
                                                                       : Json::object();
    std::string code =
        e.contains("code") && e["code"].is_string() ? e["code"].get<std::string>() : "internal";
    std::string message =
        e.contains("message") && e["message"].is_string() ? e["message"].get<std::string>() : "";
    e.erase("code");
    e.erase("message");
    e.erase("pid");
    report->error(pid, code, message, e);
  }
}

int talk(const TargetOptions& o, const Json& request, double default_timeout_s,
         const std::function<std::string(int, const Json&)>& human) {
  Report report(o.json);
  int status = kExitOk;
  std::vector<Target> targets = resolve_targets(o, &report, &status);
  if (targets.empty()) return report.finish(status);
  const int timeout = timeout_ms(o, default_timeout_s);
  report_outcomes(targets, call_all(targets, request, timeout), human, timeout, &report);
  return report.finish();
}

}  // namespace gpusleep::cli

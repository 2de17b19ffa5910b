// `gpusleep ps`, and the requests of the commands that read or change a process's settings.
#include "cli/commands.h"

#include <dirent.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cli/doctor.h"
#include "cli/format.h"
#include "protocol/client.h"
#include "protocol/runtime_dir.h"

namespace gpusleep::cli {
namespace {

// The merged rules files `gpusleep run` leaves for processes that are gone.
void remove_stale_rules(const std::string& dir, std::vector<std::string>* removed) {
  for (int pid : rules_file_pids(dir)) {
    if (process_alive(pid)) continue;
    std::string path = dir + "/" + std::to_string(pid) + ".rules.json";
    if (::remove(path.c_str()) == 0) removed->push_back(path);
  }
}

bool parse_id(const std::string& s, std::uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno != 0 || end == s.c_str() || *end != '\0' || v == 0 || s[0] == '-') return false;
  *out = v;
  return true;
}

}  // namespace

std::vector<int> rules_file_pids(const std::string& dir) {
  std::vector<int> pids;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return pids;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    const std::string suffix = ".rules.json";
    if (name.size() <= suffix.size() || name.size() > suffix.size() + 9 ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    std::string digits = name.substr(0, name.size() - suffix.size());
    if (digits.find_first_not_of("0123456789") != std::string::npos) continue;
    pids.push_back(std::atoi(digits.c_str()));
  }
  ::closedir(d);
  return pids;
}

int cmd_ps(const TargetOptions& o) {
  Report report(o.json);
  const std::string dir = default_runtime_dir();
  std::string why;
  if (!trusted_runtime_dir(dir, &why)) {
    report.error(0, "untrusted", why);
    return report.finish();
  }
  std::vector<std::string> removed;
  std::vector<ProcessEntry> live = find_processes(dir, true, &removed);
  remove_stale_rules(dir, &removed);
  std::vector<Target> targets;
  for (const auto& p : live) {
    if (!o.job || descends_from(p.pid, *o.job)) targets.push_back(Target{p.pid, p.socket});
  }
  const int timeout = timeout_ms(o, kReadTimeoutS);
  std::vector<Outcome> outcomes = call_all(targets, protocol::make_request("status"), timeout);
  if (!o.json) {
    for (const auto& r : removed) {
      const bool socket = r.size() > 5 && r.compare(r.size() - 5, 5, ".sock") == 0;
      std::fprintf(stderr, "removed stale %s %s\n", socket ? "socket" : "rules file", r.c_str());
    }
  }
  std::vector<PsRow> rows;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const Outcome& out = outcomes[i];
    const int pid = targets[i].pid;
    if (out.answered && out.reply.value("ok", false) && out.reply.contains("result")) {
      rows.push_back(PsRow{pid, parent_pid(pid), out.reply["result"]});
      report.process(pid, out.reply["result"], "",
                     {{"ppid", rows.back().ppid}, {"socket", targets[i].socket}});
    } else {
      report_outcomes(
          {targets[i]}, {out}, [](int, const Json&) { return std::string(); }, timeout, &report);
    }
  }
  report.field("removed_stale", removed);
  if (!o.json) {
    if (targets.empty()) {
      std::printf("no process %sis running with gpusleep (sockets in %s)\n",
                  o.job ? ("of job " + std::to_string(*o.job) + " ").c_str() : "", dir.c_str());
    } else if (!rows.empty()) {
      std::fputs(format_ps(rows).c_str(), stdout);
    }
  }
  return report.finish();
}

protocol::Json retag_request(const std::string& tag, const std::optional<std::string>& ids,
                             const std::optional<std::string>& range,
                             const std::optional<std::string>& call_site) {
  if ((ids ? 1 : 0) + (range ? 1 : 0) + (call_site ? 1 : 0) != 1) {
    throw UsageError("retag needs one of --id, --range and --call-site");
  }
  Json fields{{"tag", tag}};
  if (ids) {
    Json list = Json::array();
    std::string rest = *ids;
    while (!rest.empty()) {
      const std::size_t comma = rest.find(',');
      std::uint64_t id = 0;
      if (!parse_id(rest.substr(0, comma), &id))
        throw UsageError("--id takes region ids: N[,N...]");
      list.push_back(id);
      rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    }
    fields["ids"] = list;
  } else if (range) {
    const std::size_t dash = range->find('-');
    if (dash == std::string::npos) throw UsageError("--range takes START-END (addresses)");
    fields["range"] = {{"start", range->substr(0, dash)}, {"end", range->substr(dash + 1)}};
  } else {
    fields["call_site"] = *call_site;
  }
  return protocol::make_request("retag", fields);
}

protocol::Json rules_request(const std::vector<std::string>& args) {
  const std::string action = args.empty() ? "show" : args[0];
  Json fields{{"action", action}};
  if (action == "set") {
    if (args.size() != 2) throw UsageError("rules set takes a file");
    Json parsed = Json::parse(read_small_file(args[1]), nullptr, false);
    if (parsed.is_discarded()) throw std::runtime_error(args[1] + " is not valid JSON");
    fields["rules"] = parsed;
  } else if (args.size() > 1 || (action != "show" && action != "reload" && action != "clear")) {
    throw UsageError("rules takes show, set FILE, reload or clear");
  }
  return protocol::make_request("rules", fields);
}

int cmd_doctor(const TargetOptions& o, std::uint64_t min_bytes) {
  Report report(o.json);
  int status = kExitOk;
  std::vector<Target> targets = resolve_targets(o, &report, &status);
  if (targets.empty()) return report.finish(status);
  const int timeout = timeout_ms(o, kReadTimeoutS);
  std::vector<Outcome> outcomes =
      call_all(targets, protocol::make_request("regions", Json{{"stacks", true}}), timeout);
  const std::vector<Outcome> statuses =
      call_all(targets, protocol::make_request("status"), timeout);
  // A process whose regions came back gets its analysis as its result; its status only adds
  // what cannot sleep. Errors are reported as they came.
  for (std::size_t i = 0; i < targets.size(); ++i) {
    Outcome& r = outcomes[i];
    if (!r.answered || !r.reply.value("ok", false) || !r.reply.contains("result")) continue;
    const Outcome& s = statuses[i];
    const bool have_status = s.answered && s.reply.value("ok", false) && s.reply.contains("result");
    DoctorReport d = doctor(targets[i].pid, r.reply["result"],
                            have_status ? s.reply["result"] : Json::object(), {min_bytes});
    r.reply["result"] = Json{{"default_bytes", d.default_bytes},
                             {"unguessed_bytes", d.unguessed_bytes},
                             {"rules", d.rules},
                             {"report", d.text}};
  }
  report_outcomes(
      targets, outcomes,
      [](int, const Json& result) { return result["report"].get<std::string>(); }, timeout,
      &report);
  return report.finish();
}

}  // namespace gpusleep::cli

// `gpusleep swap`: one set of processes sleeps while another wakes, at once, each wake waiting
// for the memory the sleeps release, so the two copy directions overlap. Every process ends fully
// awake or fully asleep in the tags it was asked about, and the report says which.
#include <algorithm>
#include <set>
#include <thread>

#include "base/clock.h"
#include "cli/cli.h"
#include "cli/format.h"
#include "protocol/client.h"
#include "protocol/runtime_dir.h"

namespace gpusleep::cli {
namespace {

// The processes of one side: the pids given, and every process under the library of each job.
std::vector<Target> side(const std::vector<int>& pids, const std::vector<int>& jobs,
                         const char* what) {
  std::vector<Target> out;
  std::set<int> seen;
  auto add = [&](const Target& t) {
    if (seen.insert(t.pid).second) out.push_back(t);
  };
  std::string why;
  const std::vector<ProcessEntry> live =
      find_processes(default_runtime_dir(), false, nullptr, &why);
  for (int pid : pids) {
    auto it = std::find_if(live.begin(), live.end(),
                           [pid](const ProcessEntry& e) { return e.pid == pid; });
    if (it == live.end()) {
      throw UsageError(std::string("swap: process ") + std::to_string(pid) + " (to " + what +
                       ") is not running with gpusleep" + (why.empty() ? "" : ": " + why));
    }
    add(Target{it->pid, it->socket});
  }
  for (int job : jobs) {
    TargetOptions o;
    o.job = job;
    Report quiet(true);
    int status = 0;
    std::vector<Target> found = resolve_targets(o, &quiet, &status);
    if (found.empty()) {
      throw UsageError(std::string("swap: no process of job ") + std::to_string(job) + " (to " +
                       what + ") runs with gpusleep");
    }
    for (const Target& t : found)
      add(t);
  }
  if (out.empty()) {
    throw UsageError(std::string("swap: name the processes to ") + what + " (--" + what +
                     "-pid or --" + what + "-job)");
  }
  return out;
}

Json op_request(const char* op, const std::vector<std::string>& tags, const Json& extra) {
  Json fields = tags.empty() ? Json::object() : Json{{"tags", tags}};
  for (const auto& [k, v] : extra.items())
    fields[k] = v;
  return protocol::make_request(op, fields);
}

bool succeeded(const Outcome& o) {
  return o.answered && o.reply.value("ok", false);
}

// Runs `a` and `b` (each a set of calls) at the same time.
void together(const std::function<void()>& a, const std::function<void()>& b) {
  std::thread t(a);
  b();
  t.join();
}

}  // namespace

int cmd_swap(const SwapOptions& s, const TargetOptions& o) {
  std::vector<Target> sleepers = side(s.sleep_pids, s.sleep_jobs, "sleep");
  std::vector<Target> wakers = side(s.wake_pids, s.wake_jobs, "wake");
  for (const Target& a : sleepers) {
    for (const Target& b : wakers) {
      if (a.pid == b.pid) {
        throw UsageError("swap: process " + std::to_string(a.pid) + " cannot both sleep and wake");
      }
    }
  }
  Json sleep_extra = Json::object();
  if (!s.policy.empty()) sleep_extra["policy"] = s.policy;
  const Json sleep_req = op_request("sleep", s.sleep_tags, sleep_extra);
  const Json wake_req = op_request("wake", s.wake_tags, Json{{"wait", s.wait_s}});
  const Json undo_sleep = op_request("sleep", s.wake_tags, Json::object());
  const Json undo_wake = op_request("wake", s.sleep_tags, Json{{"wait", s.wait_s}});
  const int timeout = timeout_ms(o, 0);

  const double t0 = monotonic_seconds();
  std::vector<Outcome> slept, woke;
  together([&] { slept = call_all(sleepers, sleep_req, timeout); },
           [&] { woke = call_all(wakers, wake_req, timeout); });
  const double seconds = monotonic_seconds() - t0;

  std::vector<std::string> sleeper_state(sleepers.size()), waker_state(wakers.size());
  bool sleep_failed = false;
  for (std::size_t i = 0; i < sleepers.size(); ++i) {
    sleeper_state[i] = succeeded(slept[i]) ? "asleep" : "awake";
    sleep_failed = sleep_failed || !succeeded(slept[i]);
  }
  for (std::size_t i = 0; i < wakers.size(); ++i)
    waker_state[i] = succeeded(woke[i]) ? "awake" : "asleep";

  // A failed sleep undoes the swap, freeing memory before taking it: the processes that woke
  // sleep again, then every sleeper (a failed one may be asleep in part) wakes.
  std::vector<Outcome> undo_slept, undo_woke;
  if (sleep_failed) {
    std::vector<Target> woken;
    std::vector<std::size_t> woken_index;
    for (std::size_t i = 0; i < wakers.size(); ++i) {
      if (succeeded(woke[i])) {
        woken.push_back(wakers[i]);
        woken_index.push_back(i);
      }
    }
    undo_slept = call_all(woken, undo_sleep, timeout);
    for (std::size_t k = 0; k < woken.size(); ++k) {
      if (succeeded(undo_slept[k])) waker_state[woken_index[k]] = "asleep";
    }
    undo_woke = call_all(sleepers, undo_wake, timeout);
    for (std::size_t i = 0; i < sleepers.size(); ++i) {
      if (succeeded(undo_woke[i])) {
        sleeper_state[i] = "awake";
      } else if (!succeeded(slept[i])) {
        sleeper_state[i] = "partly asleep";
      }
    }
  }

  Report report(o.json);
  auto add = [&](const std::vector<Target>& ts, const std::vector<Outcome>& outs,
                 const std::vector<std::string>& states, const char* role, const char* verb) {
    for (std::size_t i = 0; i < ts.size(); ++i) {
      const Json extra{{"role", role}, {"state", states[i]}};
      const std::string now = "  (now " + states[i] + ")\n";
      if (succeeded(outs[i])) {
        const Json& r = outs[i].reply.contains("result") ? outs[i].reply["result"] : Json();
        std::string text = format_sleep_wake(ts[i].pid, verb, r);
        if (!text.empty() && text.back() == '\n') text.pop_back();
        report.process(ts[i].pid, r, text + now, extra);
        continue;
      }
      report.process(ts[i].pid, nullptr,
                     "pid " + std::to_string(ts[i].pid) + ": " + role + " failed" + now, extra);
      report_outcomes(
          {ts[i]}, {outs[i]}, [](int, const Json&) { return std::string(); }, timeout, &report);
    }
  };
  add(sleepers, slept, sleeper_state, "sleep", "slept");
  add(wakers, woke, waker_state, "wake", "woke");
  report.field("seconds", seconds);
  report.field("rolled_back", sleep_failed);
  if (!report.json()) {
    std::printf("swap: %zu slept, %zu woke in %.1f ms%s\n", sleepers.size(), wakers.size(),
                seconds * 1e3, sleep_failed ? "; a sleep failed, so the swap was undone" : "");
  }
  return report.finish();
}

}  // namespace gpusleep::cli

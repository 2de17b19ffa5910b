// `gpusleep sleep` and `wake`, and their progress on stderr while they run: the bytes being moved
// (from a status taken before), the time so far, and, where a process reports the operation in
// flight in its status, the bytes done, the rate and the time left.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cli/cli.h"
#include "cli/format.h"

namespace gpusleep::cli {
namespace {

using Clock = std::chrono::steady_clock;

std::uint64_t number(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_unsigned() ? it->get<std::uint64_t>() : 0;
}

// The bytes a sleep (resident) or a wake (asleep) of `tags` (empty: every tag) will move.
std::uint64_t bytes_to_move(const Json& status, bool sleep, const std::set<std::string>& tags) {
  std::uint64_t total = 0;
  auto list = status.find("tags");
  if (list == status.end() || !list->is_array()) return 0;
  for (const Json& t : *list) {
    auto name = t.find("tag");
    if (!tags.empty() &&
        (name == t.end() || !name->is_string() || tags.count(name->get<std::string>()) == 0)) {
      continue;
    }
    total += number(t, sleep ? "resident_bytes" : "asleep_bytes");
  }
  return total;
}

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, s < 10 ? "%.1f s" : "%.0f s", s);
  return buf;
}

class Progress {
 public:
  Progress(const std::vector<Target>& targets, bool sleep, const Json& request)
      : targets_(targets), sleep_(sleep), terminal_(::isatty(STDERR_FILENO) == 1) {
    if (auto t = request.find("tags"); t != request.end() && t->is_array()) {
      for (const Json& tag : *t)
        if (tag.is_string()) tags_.insert(tag.get<std::string>());
    }
  }

  // Takes the status before the operation and starts showing progress.
  void start() {
    const Json status = protocol::make_request("status");
    for (const Outcome& o : call_all(targets_, status, 3000)) {
      if (o.answered && o.reply.value("ok", false) && o.reply.contains("result")) {
        total_ += bytes_to_move(o.reply["result"], sleep_, tags_);
      }
    }
    started_ = Clock::now();
    show(line());
    poller_ = std::thread([this] { poll(); });
    ticker_ = std::thread([this] { tick(); });
  }

  // Stops showing progress; `failed` says whether any process reported an error.
  void finish(bool failed) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    wake_.notify_all();
    ticker_.join();
    poller_.join();
    const double s = std::chrono::duration<double>(Clock::now() - started_).count();
    if (terminal_) {
      std::fputs("\r\033[K", stderr);
    } else {
      std::string verb =
          failed ? (sleep_ ? "sleep ended" : "wake ended") : (sleep_ ? "slept" : "woke");
      std::fprintf(stderr, "%s %s in %s\n", verb.c_str(), bytes_text(Json(total_)).c_str(),
                   seconds(s).c_str());
    }
    std::fflush(stderr);
  }

 private:
  // Asks each process for its status on a connection of its own, as long as the operation runs.
  // A process that does not answer within a second answers status only after the operation: it
  // is asked no more, so that no more than one connection waits in it. Each process counts with
  // the most it has reported done, so the sum never goes back when one finishes first.
  void poll() {
    const Json request = protocol::make_request("status");
    std::vector<Target> asked = targets_;
    std::map<int, std::uint64_t> most;  // by pid
    while (!stopping() && !asked.empty()) {
      bool known = false;
      std::vector<Outcome> outcomes = call_all(asked, request, 1000);
      std::vector<Target> answering;
      for (std::size_t i = 0; i < outcomes.size(); ++i) {
        const Outcome& o = outcomes[i];
        if (!o.answered) continue;
        answering.push_back(asked[i]);
        if (!o.reply.value("ok", false) || !o.reply.contains("result")) continue;
        const Json& result = o.reply["result"];
        auto op = result.find("operation");
        if (op == result.end() || !op->is_object()) continue;
        known = true;
        std::uint64_t& m = most[asked[i].pid];
        m = std::max(m, number(*op, "done_bytes"));
      }
      asked = answering;
      std::uint64_t done = 0;
      for (const auto& [pid, bytes] : most)
        done += bytes;
      std::unique_lock<std::mutex> lock(mu_);
      if (known) done_bytes_ = done;
      wake_.wait_for(lock, std::chrono::milliseconds(250), [this] { return done_; });
    }
  }

  void tick() {
    const auto period = std::chrono::milliseconds(terminal_ ? 200 : 1000);
    std::unique_lock<std::mutex> lock(mu_);
    while (!wake_.wait_for(lock, period, [this] { return done_; })) {
      lock.unlock();
      show(line());
      lock.lock();
    }
  }

  bool stopping() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }

  std::string line() {
    const double s = std::chrono::duration<double>(Clock::now() - started_).count();
    std::optional<std::uint64_t> done;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done = done_bytes_;
    }
    std::string verb = sleep_ ? "sleeping" : "waking";
    std::string who = targets_.size() == 1 ? "pid " + std::to_string(targets_[0].pid)
                                           : std::to_string(targets_.size()) + " processes";
    if (!done) {
      return verb + " " + bytes_text(Json(total_)) + " (" + who + "): " + seconds(s);
    }
    std::string out =
        verb + " " + bytes_text(Json(*done)) + " of " + bytes_text(Json(total_)) + " (" + who + ")";
    if (s > 0.05 && *done > 0) {
      const double rate = *done / s;
      char buf[64];
      if (rate >= 1e9) {
        std::snprintf(buf, sizeof buf, ", %.1f GB/s", rate / 1e9);
      } else {
        std::snprintf(buf, sizeof buf, ", %.0f MB/s", rate / 1e6);
      }
      out += buf;
      if (total_ > *done) out += ", " + seconds((total_ - *done) / rate) + " left";
    }
    return out + ": " + seconds(s);
  }

  void show(const std::string& text) {
    if (terminal_) {
      std::fprintf(stderr, "\r\033[K%s", text.c_str());
    } else {
      std::fprintf(stderr, "%s\n", text.c_str());
    }
    std::fflush(stderr);
  }

  const std::vector<Target>& targets_;
  const bool sleep_;
  const bool terminal_;
  std::set<std::string> tags_;
  std::uint64_t total_ = 0;
  Clock::time_point started_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool done_ = false;
  std::optional<std::uint64_t> done_bytes_;
  std::thread poller_;
  std::thread ticker_;
};

}  // namespace

bool progress_default() {
  return ::isatty(STDERR_FILENO) == 1;
}

int sleep_wake(const TargetOptions& o, bool sleep, const Json& request, bool progress) {
  Report report(o.json);
  int status = kExitOk;
  std::vector<Target> targets = resolve_targets(o, &report, &status);
  if (targets.empty()) return report.finish(status);
  const int timeout = timeout_ms(o, -1);
  auto human = [sleep](int pid, const Json& r) {
    return format_sleep_wake(pid, sleep ? "slept" : "woke", r);
  };
  std::vector<Outcome> outcomes;
  if (progress) {
    Progress p(targets, sleep, request);
    p.start();
    outcomes = call_all(targets, request, timeout);
    bool failed = false;
    for (const Outcome& out : outcomes)
      failed = failed || !out.answered || !out.reply.value("ok", false);
    p.finish(failed);
  } else {
    outcomes = call_all(targets, request, timeout);
  }
  report_outcomes(targets, outcomes, human, timeout, &report);
  return report.finish();
}

}  // namespace gpusleep::cli

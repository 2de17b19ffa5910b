// What the gpusleep command's parts share: the options every controlling command takes, the
// processes it talks to, and the one report (human text or a JSON envelope) it prints.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "protocol/protocol.h"

namespace gpusleep::cli {

using protocol::Json;

// Exit statuses (docs/protocol.md, "The gpusleep command").
inline constexpr int kExitOk = 0;      // every process did what was asked
inline constexpr int kExitFailed = 1;  // a process reported an error, or none was found
inline constexpr int kExitUsage = 2;   // the command line is wrong: nothing was done

// A usage error found after parsing: printed with a pointer to the command's help, exit 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Which processes a command talks to, and how it reports.
struct TargetOptions {
  std::optional<int> pid;
  std::optional<std::string> socket;
  bool all = false;
  std::optional<int> job;  // this process and its descendants
  bool json = false;
  double timeout_s = -1;  // negative: the command's default; 0: no limit
};

struct Target {
  int pid;
  std::string socket;
};

// What one process answered, or why it did not.
struct Outcome {
  bool answered = false;
  std::string code;  // when !answered: connection_failed, untrusted or timeout
  std::string error;
  Json reply;
};

// Collects what a command prints. Human text goes out as it comes (results on stdout, errors on
// stderr); with --json nothing is printed until finish(), which prints one envelope:
//   {"processes": [{"pid": N, "result": {...}}, ...],
//    "errors": [{"pid": N|null, "code": ..., "message": ..., more fields of the error}, ...]}
class Report {
 public:
  explicit Report(bool json) : json_(json) {}
  // A process's result; `human` is its text; `extra` fields are added to its entry.
  void process(int pid, const Json& result, const std::string& human,
               const Json& extra = Json::object());
  // An error of process `pid` (0: of no process in particular, null in JSON); the fields of
  // `details` go beside its code and message.
  void error(int pid, const std::string& code, const std::string& message,
             const Json& details = Json::object());
  // Adds a field at the envelope's top level (ignored in human output).
  void field(const std::string& key, const Json& value) { fields_[key] = value; }
  // Prints the envelope (with --json); returns the exit status: kExitOk when no error was
  // reported, else `error_status`.
  int finish(int error_status = kExitFailed);
  bool json() const { return json_; }

 private:
  bool json_;
  Json processes_ = Json::array();
  Json errors_ = Json::array();
  Json fields_ = Json::object();
};

// The processes the options name, found in the runtime directory. On failure (none found,
// several without --all, an untrusted directory) reports the error and returns nothing;
// *status is then the exit status to end with.
std::vector<Target> resolve_targets(const TargetOptions& o, Report* report, int* status);

// Sends `request` to every target at once and waits for all replies, each at most `timeout_ms`
// (negative: no limit).
std::vector<Outcome> call_all(const std::vector<Target>& targets, const Json& request,
                              int timeout_ms);

// The reply timeout in milliseconds: --timeout when given, else `default_s` (negative: none).
int timeout_ms(const TargetOptions& o, double default_s);

// Adds each outcome to `report`: results through `human`, errors as they came.
void report_outcomes(const std::vector<Target>& targets, const std::vector<Outcome>& outcomes,
                     const std::function<std::string(int, const Json&)>& human, int timeout,
                     Report* report);

// Resolves the targets, sends `request`, reports; returns the exit status.
int talk(const TargetOptions& o, const Json& request, double default_timeout_s,
         const std::function<std::string(int, const Json&)>& human);

// The parent of process `pid` from /proc/PID/stat (0 when unknown).
// The text of the file at `path`, at most 1 MiB (rules files, presets); throws
// std::runtime_error saying why it cannot be had.
std::string read_small_file(const std::string& path);

int parent_pid(int pid);

// Whether `pid` is `ancestor` or descends from it.
bool descends_from(int pid, int ancestor);

// The default reply timeout of commands that only read, in seconds.
inline constexpr double kReadTimeoutS = 10;

// `gpusleep ps`, `gpusleep sleep`/`wake` with their progress (commands.cpp, progress.cpp).
int cmd_ps(const TargetOptions& o);
// `gpusleep doctor` (commands.cpp): each process's regions with their stacks and its status,
// analysed by doctor() (doctor.h); call sites of fewer than `min_bytes` are counted, not listed.
int cmd_doctor(const TargetOptions& o, std::uint64_t min_bytes);
int sleep_wake(const TargetOptions& o, bool sleep, const Json& request, bool progress);
// Whether sleep and wake show progress when not told: when stderr is a terminal.
bool progress_default();

// `gpusleep swap` (swap.cpp): the processes to sleep and to wake, by pid or job, and how.
struct SwapOptions {
  std::vector<int> sleep_pids, wake_pids;
  std::vector<int> sleep_jobs, wake_jobs;
  std::vector<std::string> sleep_tags, wake_tags;  // empty: every tag
  std::string policy;                              // overrides the sleeping tags' policies
  double wait_s = 60;                              // how long each wake waits for memory
};
// Sleeps one set while the other wakes; a selection that names nothing, names a process in
// both sets or a process not under the library is a UsageError before anything is sent. Uses
// `o`'s --json and --timeout only.
int cmd_swap(const SwapOptions& s, const TargetOptions& o);

}  // namespace gpusleep::cli

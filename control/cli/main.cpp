// gpusleep: the command-line controller. Starts programs under the library, finds them, and asks
// them to report, sleep and wake. This file is the command line: each command, its options and
// its help; the work is in the files beside it.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/version.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "cli/launch.h"

namespace gpusleep::cli {
namespace {

constexpr const char* kFooter = R"(
Which process (every command but run and ps):
  --pid N          the process N
  --socket PATH    the process behind a control socket
  --job PID        the process PID and its descendants (a launcher and its workers)
  --all            every process running with the library, in parallel
  (none)           the one process running with the library, if there is one

Environment: GPUSLEEP_RUNTIME_DIR (where the sockets are), GPUSLEEP_LIBRARY (the library run
preloads), GPUSLEEP_PRESET_DIR (where presets are).
Exit status: 0 on success; 1 when a process reported an error or none was found; 2 on a usage
error, when nothing was done. run exits with its program's status.
'gpusleep COMMAND --help' or 'gpusleep help COMMAND' shows a command's options.)";

const std::vector<std::string> kCommands = {"run",   "ps",     "status", "regions", "retag",
                                            "sleep", "wake",   "swap",   "tag",     "policy",
                                            "rules", "doctor", "help"};

// Edit distance, for "did you mean": the names are short.
std::size_t distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// A command the name begins, else the nearest within two edits, else "".
std::string suggestion(const std::string& name) {
  for (const std::string& c : kCommands) {
    if (name.size() >= 2 && c.rfind(name, 0) == 0) return c;
  }
  std::string best;
  std::size_t best_distance = 3;
  for (const std::string& c : kCommands) {
    const std::size_t d = distance(name.substr(0, 32), c);
    if (d < best_distance) {
      best = c;
      best_distance = d;
    }
  }
  return best;
}

[[noreturn]] void unknown_command(const std::string& name) {
  const std::string best = suggestion(name);
  std::fprintf(stderr, "gpusleep: unknown command '%s'%s\n(gpusleep --help lists the commands)\n",
               name.c_str(), best.empty() ? "" : ("; did you mean '" + best + "'?").c_str());
  std::exit(kExitUsage);
}

// The options of every command that talks to processes; `select` adds the choice of process.
void add_target_options(CLI::App* c, TargetOptions* t, int* pid, std::string* socket, int* job,
                        bool select) {
  if (select) {
    auto* p = c->add_option("--pid", *pid, "the process PID")
                  ->type_name("PID")
                  ->check(CLI::Range(1, INT_MAX));
    auto* s = c->add_option("--socket", *socket, "the process behind this control socket")
                  ->type_name("PATH");
    auto* a = c->add_flag("--all", t->all, "every process running with the library");
    auto* j = c->add_option("--job", *job, "the process PID and its descendants")
                  ->type_name("PID")
                  ->check(CLI::Range(1, INT_MAX));
    p->excludes(s)->excludes(a)->excludes(j);
    s->excludes(a)->excludes(j);
    a->excludes(j);
  } else {
    c->add_option("--job", *job, "only the process PID and its descendants")
        ->type_name("PID")
        ->check(CLI::Range(1, INT_MAX));
  }
  c->add_flag("--json", t->json,
              "print one JSON object: {\"processes\": [...], \"errors\": [...]} "
              "(docs/protocol.md)");
  c->add_option("--timeout", t->timeout_s, "give up on a reply after SECONDS (0: never)")
      ->type_name("SECONDS")
      ->check(CLI::Range(0.0, 86400.0));
}

struct Parsed {
  TargetOptions target;
  int pid = 0;
  std::string socket;
  int job = 0;
  RunOptions run;
  std::string run_tag, run_policy, run_log_level, run_rules;
  std::vector<std::string> tags;
  std::vector<std::string> words;  // positionals of tag, policy, rules, help, retag
  std::string policy;
  bool no_gate = false;
  bool progress = false, no_progress = false;
  bool stacks = false, group = false;
  int depth = 1;
  double min_mib = 64;
  bool clear = false;
  std::string ids, range, call_site;
  bool print_library = false;
  double wait = -1;  // wake --wait
  SwapOptions swap;
};

std::optional<std::string> given(const std::string& s) {
  return s.empty() ? std::nullopt : std::optional<std::string>(s);
}

Json tags_field(const std::vector<std::string>& tags) {
  return tags.empty() ? Json::object() : Json{{"tags", tags}};
}

// Builds the command line into `app`, storing what it parses into `p`.
void build(CLI::App& app, Parsed& p) {
  app.set_version_flag("--version", std::string("gpusleep ") + kVersionString,
                       "print the version and exit");
  app.add_flag("--print-library", p.print_library,
               "print the path of libgpusleep.so (for LD_PRELOAD) and exit");
  app.footer(kFooter);
  app.require_subcommand(0, 1);

  auto target = [&](CLI::App* c, bool select = true) {
    add_target_options(c, &p.target, &p.pid, &p.socket, &p.job, select);
  };

  CLI::App* run = app.add_subcommand(
      "run",
      "Start CMD with the library preloaded: gpusleep run [OPTIONS] [--] CMD [ARGS...]. A Python "
      "command with no --preset and no --rules gets --preset auto.");
  run->add_option("--tag", p.run_tag, "tag for allocations no rule tags (default: default)")
      ->type_name("TAG");
  run->add_option("--policy", p.run_policy, "per-tag policies, e.g. weights=offload")
      ->type_name("TAG=POLICY,...");
  run->add_option("--preset", p.run.presets,
                  "tagging rules shipped for pytorch, transformers, vllm, sglang, nccl; repeat to "
                  "combine (in order); auto: all of them; none: no rules")
      ->type_name("NAME")
      ->allow_extra_args(false);
  run->add_option("--rules", p.run_rules, "tagging rules from FILE (docs/tagging.md)")
      ->type_name("FILE");
  run->add_option("--log-level", p.run_log_level, "error, warn, info or debug")->type_name("LEVEL");
  run->prefix_command();

  CLI::App* ps = app.add_subcommand(
      "ps",
      "List the processes running with the library: pid, parent, devices, regions, bytes "
      "resident and asleep, command line.");
  target(ps, false);

  CLI::App* status = app.add_subcommand(
      "status",
      "Per tag: policy, state, regions, bytes resident and asleep, host mirror bytes, "
      "last sleep and wake durations; devices.");
  target(status);

  CLI::App* doctor = app.add_subcommand(
      "doctor",
      "The memory left in the default tag, by call site, with a tag guessed for each and the "
      "rules file that would tag it.");
  doctor->add_option("--min-mib", p.min_mib, "list call sites holding at least this many MiB")
      ->check(CLI::Range(0.0, 1e9));
  target(doctor);

  CLI::App* regions =
      app.add_subcommand("regions", "Every region: address, size, device, tag, state, call site.");
  regions->add_option("tags", p.tags, "only these tags")->type_name("TAG");
  regions->add_flag("--stacks", p.stacks, "each region's Python and native frames");
  auto* group = regions->add_flag("--group", p.group, "regions and bytes per call site");
  regions->add_option("--depth", p.depth, "call sites of the innermost N Python frames")
      ->type_name("N")
      ->check(CLI::Range(1, 64))
      ->needs(group);
  target(regions);

  CLI::App* retag = app.add_subcommand("retag", "Give regions the tag TAG.");
  retag->add_option("tag", p.words, "the new tag")->type_name("TAG")->required()->expected(1);
  retag->add_option("--id", p.ids, "regions by id")->type_name("N[,N...]");
  retag->add_option("--range", p.range, "regions within addresses")->type_name("START-END");
  retag->add_option("--call-site", p.call_site, "regions whose call site matches")
      ->type_name("REGEX");
  target(retag);

  CLI::App* sleep = app.add_subcommand(
      "sleep",
      "Copy out (offload) or drop (discard) the TAGs' contents and release their GPU memory; no "
      "TAG: every tag. The process's GPU work waits until wake.");
  sleep->add_option("tags", p.tags, "the tags to sleep (default: all)")->type_name("TAG");
  sleep->add_option("--policy", p.policy, "override the tags' policies")
      ->type_name("offload|discard");
  sleep->add_flag("--no-gate", p.no_gate,
                  "let the process's GPU work go on (it must leave the TAGs' memory alone)");
  auto* sleep_progress = sleep->add_flag(
      "--progress", p.progress,
      "show bytes, rate and time left on stderr (default: when stderr is a terminal)");
  sleep->add_flag("--no-progress", p.no_progress, "show no progress")->excludes(sleep_progress);
  target(sleep);

  CLI::App* wake = app.add_subcommand(
      "wake",
      "Map GPU memory back at the same addresses and restore contents; no TAG: every tag. All "
      "or nothing.");
  wake->add_option("tags", p.tags, "the tags to wake (default: all)")->type_name("TAG");
  auto* on = wake->add_flag("--progress", p.progress,
                            "show bytes, rate and time left on stderr (default: when stderr is a "
                            "terminal)");
  wake->add_flag("--no-progress", p.no_progress, "show no progress")->excludes(on);
  wake->add_option("--wait", p.wait,
                   "when the memory is held elsewhere, take it as it is freed for up to SECONDS "
                   "(still all or nothing at the end)")
      ->type_name("SECONDS")
      ->check(CLI::Range(0.0, 3600.0));
  target(wake);

  CLI::App* swap = app.add_subcommand(
      "swap",
      "Sleep some processes while others wake into the memory they release, both copy "
      "directions at once. Each process ends fully awake or fully asleep; a failed sleep undoes "
      "the swap.");
  swap->add_option("--sleep-pid", p.swap.sleep_pids, "a process to sleep (repeatable)")
      ->type_name("PID")
      ->check(CLI::Range(1, INT_MAX));
  swap->add_option("--wake-pid", p.swap.wake_pids, "a process to wake (repeatable)")
      ->type_name("PID")
      ->check(CLI::Range(1, INT_MAX));
  swap->add_option("--sleep-job", p.swap.sleep_jobs,
                   "sleep this process and its descendants under gpusleep (repeatable)")
      ->type_name("PID")
      ->check(CLI::Range(1, INT_MAX));
  swap->add_option("--wake-job", p.swap.wake_jobs,
                   "wake this process and its descendants under gpusleep (repeatable)")
      ->type_name("PID")
      ->check(CLI::Range(1, INT_MAX));
  swap->add_option("--sleep-tag", p.swap.sleep_tags, "a tag to sleep (repeatable; default: all)")
      ->type_name("TAG");
  swap->add_option("--wake-tag", p.swap.wake_tags, "a tag to wake (repeatable; default: all)")
      ->type_name("TAG");
  swap->add_option("--policy", p.swap.policy, "override the sleeping tags' policies")
      ->type_name("offload|discard");
  swap->add_option("--wait", p.swap.wait_s, "how long each wake waits for memory (default 60)")
      ->type_name("SECONDS")
      ->check(CLI::Range(0.0, 3600.0));
  target(swap, false);

  CLI::App* tag =
      app.add_subcommand("tag", "Tag later allocations TAG (phase tagging); no TAG: show the tag.");
  tag->add_option("tag", p.words, "the phase tag")->type_name("TAG")->expected(0, 1);
  tag->add_flag("--clear", p.clear, "clear the phase tag");
  target(tag);

  CLI::App* policy =
      app.add_subcommand("policy", "Show the per-tag policies, or set TAG's to POLICY.");
  policy->add_option("tag_policy", p.words, "TAG [offload|discard]")
      ->type_name("TAG [POLICY]")
      ->expected(0, 2);
  target(policy);

  CLI::App* rules = app.add_subcommand(
      "rules",
      "Show the tagging rules (show), replace them with FILE's (set FILE), read the process's "
      "GPUSLEEP_RULES file again (reload), or drop them (clear).");
  rules->add_option("action", p.words, "show | set FILE | reload | clear")
      ->type_name("ACTION [FILE]")
      ->expected(0, 2);
  target(rules);

  CLI::App* help = app.add_subcommand("help", "Show the help of COMMAND, or this text.");
  help->add_option("command", p.words, "a command")->type_name("COMMAND")->expected(0, 1);
}

// Runs the parsed command; returns the exit status.
int dispatch(CLI::App& app, Parsed& p) {
  if (p.pid > 0) p.target.pid = p.pid;
  if (p.job > 0) p.target.job = p.job;
  if (!p.socket.empty()) p.target.socket = p.socket;
  const TargetOptions& t = p.target;
  std::vector<CLI::App*> chosen = app.get_subcommands();
  if (chosen.empty()) {
    if (p.print_library) return print_library();
    std::fputs(app.help().c_str(), stderr);
    std::fputs("\ngpusleep: no command given\n", stderr);
    return kExitUsage;
  }
  if (p.print_library) throw UsageError("--print-library goes alone");
  const std::string name = chosen[0]->get_name();
  auto read = [&](const Json& request, const std::function<std::string(int, const Json&)>& human) {
    return talk(t, request, kReadTimeoutS, human);
  };
  auto change = [&](const Json& request, const std::function<std::string(int, const Json&)>& h) {
    return talk(t, request, -1, h);
  };
  if (name == "help") {
    if (p.words.empty()) {
      std::fputs(app.help().c_str(), stdout);
      return kExitOk;
    }
    if (std::find(kCommands.begin(), kCommands.end(), p.words[0]) == kCommands.end()) {
      unknown_command(p.words[0]);
    }
    std::fputs(app.get_subcommand(p.words[0])->help("gpusleep").c_str(), stdout);
    return kExitOk;
  }
  if (name == "run") {
    p.run.tag = given(p.run_tag);
    p.run.policy = given(p.run_policy);
    p.run.log_level = given(p.run_log_level);
    p.run.rules_file = given(p.run_rules);
    for (const std::string& a : chosen[0]->remaining())
      p.run.command.push_back(a);
    return run(p.run);
  }
  if (name == "ps") return cmd_ps(t);
  if (name == "status") return read(protocol::make_request("status"), format_status);
  if (name == "doctor") return cmd_doctor(t, static_cast<std::uint64_t>(p.min_mib * (1 << 20)));
  if (name == "regions") {
    Json fields = tags_field(p.tags);
    if (p.stacks) fields["stacks"] = true;
    if (p.group) fields["group"] = true;
    if (p.depth != 1) fields["depth"] = p.depth;
    return read(protocol::make_request("regions", fields), format_regions);
  }
  if (name == "retag") {
    return change(retag_request(p.words[0], given(p.ids), given(p.range), given(p.call_site)),
                  format_retag);
  }
  if (name == "sleep" || name == "wake") {
    const bool sleep = name == "sleep";
    Json fields = tags_field(p.tags);
    if (!p.policy.empty()) fields["policy"] = p.policy;
    if (p.no_gate) fields["gate"] = false;
    if (!sleep && p.wait >= 0) fields["wait"] = p.wait;
    const bool progress = p.progress || (!p.no_progress && progress_default());
    return sleep_wake(t, sleep, protocol::make_request(name, fields), progress);
  }
  if (name == "swap") return cmd_swap(p.swap, t);
  if (name == "tag") {
    if (p.clear && !p.words.empty()) throw UsageError("give a tag or --clear, not both");
    Json fields = Json::object();
    if (p.clear) fields["clear"] = true;
    if (!p.words.empty()) fields["tag"] = p.words[0];
    Json request = protocol::make_request("tag", fields);
    return fields.empty() ? read(request, format_tag) : change(request, format_tag);
  }
  if (name == "policy") {
    Json fields = Json::object();
    if (!p.words.empty()) fields["tag"] = p.words[0];
    if (p.words.size() == 2) fields["policy"] = p.words[1];
    Json request = protocol::make_request("policy", fields);
    return p.words.size() == 2 ? change(request, format_policy) : read(request, format_policy);
  }
  if (name == "rules") {
    Json request = rules_request(p.words);
    return p.words.empty() || p.words[0] == "show" ? read(request, format_rules)
                                                   : change(request, format_rules);
  }
  unknown_command(name);
}

int main_impl(int argc, char** argv) {
  // The first word that is not an option names the command: a typo gets a suggestion rather
  // than a parser's complaint about an unexpected argument.
  std::vector<std::string> args(argv + 1, argv + argc);
  auto first = std::find_if(args.begin(), args.end(),
                            [](const std::string& a) { return a.empty() || a[0] != '-'; });
  if (first != args.end() &&
      std::find(kCommands.begin(), kCommands.end(), *first) == kCommands.end()) {
    unknown_command(*first);
  }
  // run's program follows "--": everything after it is the program's, options included.
  std::vector<std::string> program;
  if (first != args.end() && *first == "run") {
    auto dashes = std::find(first, args.end(), "--");
    if (dashes != args.end()) {
      program.assign(dashes + 1, args.end());
      if (program.empty()) throw UsageError("run needs a command after --");
      args.erase(dashes, args.end());
    }
  }
  CLI::App app{"gpusleep: put the GPU memory of running programs to sleep and wake it.",
               "gpusleep"};
  Parsed p;
  build(app, p);
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string where = first != args.end() ? " " + *first : "";
    std::fprintf(stderr, "gpusleep%s: %s\n(gpusleep%s --help for usage)\n", where.c_str(), e.what(),
                 where.c_str());
    return kExitUsage;
  }
  if (!program.empty()) {
    if (!app.get_subcommand("run")->remaining().empty()) {
      throw UsageError("give the program after --, or without --, not both");
    }
    p.run.command = program;
  }
  return dispatch(app, p);
}

}  // namespace
}  // namespace gpusleep::cli

int main(int argc, char** argv) {
  try {
    return gpusleep::cli::main_impl(argc, argv);
  } catch (const gpusleep::cli::UsageError& e) {
    std::fprintf(stderr, "gpusleep: %s\n(gpusleep --help for usage)\n", e.what());
    return gpusleep::cli::kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpusleep: %s\n", e.what());
    return gpusleep::cli::kExitFailed;
  }
}

// What tagging rules cost an allocation: RuleSet::match over a 50-frame Python stack and 30 native
// symbols, for the shipped presets together and for the worst rule set the limits let anyone
// write (as many rules and automaton states as a set may hold, every pattern built to keep all
// its states alive over the whole subject). Per allocation, the median of several rounds:
//   cached: the stack seen before (a server's steady state: its allocation sites repeat);
//   one new frame: an allocation from a new call site under known callers;
//   all new: every frame and symbol new (the first allocation of a process).
// The per-pattern cost is also reported against the bound Pattern::search promises.
//   bench_rules [PRESET.json ...]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "core/rules.h"

namespace {

using Clock = std::chrono::steady_clock;
using gpusleep::AllocationFacts;
using gpusleep::PyFrame;
using gpusleep::RuleSet;

class Stack : public gpusleep::SiteContext {
 public:
  // Frames made unique by `generation` (0: the same every time).
  Stack(int frames, int symbols, unsigned generation, bool only_innermost) {
    for (int i = 0; i < frames; ++i) {
      const unsigned g = only_innermost && i > 0 ? 0 : generation;
      frames_.push_back({"serving.engine.model_runner_" + std::to_string(i),
                         "ModelRunner.step_" + std::to_string(i) + "_" + std::to_string(g),
                         "/opt/venv/lib/python3.12/site-packages/serving/engine/runner_" +
                             std::to_string(i) + ".py",
                         100 + i + static_cast<int>(g)});
    }
    for (int i = 0; i < symbols; ++i) {
      symbols_.push_back("at::native::(anonymous namespace)::allocate_" + std::to_string(i) + "_" +
                         std::to_string(only_innermost && i > 0 ? 0 : generation) +
                         "(c10::Allocator*, unsigned long)");
    }
  }
  const std::vector<PyFrame>& python_frames() override { return frames_; }
  const std::vector<std::string>& native_symbols() override { return symbols_; }
  bool capturing() override { return false; }
  std::shared_ptr<const gpusleep::CallSite> call_site() override { return nullptr; }

 private:
  std::vector<PyFrame> frames_;
  std::vector<std::string> symbols_;
};

// The longest pattern of at most `states` states that keeps every state alive over any subject
// and, with `never`, never matches: a chain of ".*" ending in "~~", which no frame holds.
std::string busy_pattern(std::size_t states, bool never) {
  const std::string end = never ? "~~" : "$";
  std::string p;
  std::string error;
  for (;;) {
    auto compiled = gpusleep::Pattern::compile(p + ".*" + end, &error);
    if (!compiled || compiled->states() > states) break;
    p += ".*";
  }
  return p + end;
}

std::size_t states_of(const RuleSet& set) {
  auto of = [](const std::optional<gpusleep::Pattern>& p) { return p ? p->states() : 0; };
  std::size_t states = 0;
  for (const auto& r : set.rules()) {
    for (const auto& m : r.python)
      states += of(m.module) + of(m.qualname) + of(m.file);
    states += of(r.native) + of(r.phase);
  }
  return states;
}

// `rules` rules sharing the set's state limit. With room, each has module, qualname, file and
// native patterns: module and qualname match, so the file is tried too, and never matches; nor
// does the native pattern. With the most rules, each has one qualname pattern that never matches.
// Every pattern runs over every new frame or symbol, and no rule ends the search.
std::string worst_rule_set(std::size_t rules) {
  const std::size_t per_rule = RuleSet::kMaxTotalStates / rules;
  std::string json = "{\"rules\": [";
  for (std::size_t i = 0; i < rules; ++i) {
    json += (i ? "," : "");
    json += "{\"tag\": \"t" + std::to_string(i) + "\", \"match\": {\"python\": {";
    if (per_rule >= 40) {
      json += "\"module\": \"" + busy_pattern(per_rule / 4, false) + "\", \"qualname\": \"" +
              busy_pattern(per_rule / 4, false) + "\", \"file\": \"" +
              busy_pattern(per_rule / 4, true) + "\"}, \"native\": \"" +
              busy_pattern(per_rule / 4, true) + "\"}}";
    } else {
      json += "\"qualname\": \"" + busy_pattern(per_rule, true) + "\"}}}";
    }
  }
  return json + "]}";
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Costs {
  double cached_us, one_new_us, all_new_us;
};

Costs measure(const RuleSet& set, int rounds) {
  const AllocationFacts facts{2u << 20, 0, 1, ""};
  std::vector<double> cached, one_new, all_new;
  Stack warm(50, 30, 0, false);
  set.match(facts, &warm);
  unsigned generation = 1;
  for (int r = 0; r < rounds; ++r) {
    auto t = Clock::now();
    set.match(facts, &warm);
    cached.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
    Stack one(50, 30, generation++, true);
    t = Clock::now();
    set.match(facts, &one);
    one_new.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
    if (r < 5) {
      Stack all(50, 30, generation++, false);
      t = Clock::now();
      set.match(facts, &all);
      all_new.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
    }
  }
  return {median(cached), median(one_new), median(all_new)};
}

std::string read_file(const char* path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Presets' rule lists joined into one set, as --preset auto loads them.
std::string joined(int argc, char** argv) {
  std::string rules;
  for (int i = 1; i < argc; ++i) {
    std::string text = read_file(argv[i]);
    auto a = text.find('[', text.find("\"rules\""));
    auto b = text.rfind(']');
    if (a == std::string::npos || b == std::string::npos || b <= a + 1) continue;
    std::string body = text.substr(a + 1, b - a - 1);
    if (body.find_first_not_of(" \n\t") == std::string::npos) continue;
    rules += (rules.empty() ? "" : ",") + body;
  }
  return "{\"rules\": [" + rules + "]}";
}

void report(const char* name, const RuleSet& set) {
  Costs c = measure(set, 30);
  std::printf(
      "{\"set\": \"%s\", \"rules\": %zu, \"states\": %zu, \"cached_us\": %.2f, "
      "\"one_new_frame_us\": %.1f, \"all_new_us\": %.1f}\n",
      name, set.rules().size(), states_of(set), c.cached_us, c.one_new_us, c.all_new_us);
}

}  // namespace

int main(int argc, char** argv) {
  std::printf("{\"limits\": {\"rules\": %zu, \"states\": %zu, \"cached_subjects\": %zu}}\n",
              RuleSet::kMaxRules, RuleSet::kMaxTotalStates, RuleSet::kMaxCached);
  std::string error;
  for (std::size_t rules : {std::size_t{100}, RuleSet::kMaxRules}) {
    auto worst = RuleSet::parse(worst_rule_set(rules), &error);
    if (!worst) {
      std::fprintf(stderr, "the worst rule set of %zu rules was refused: %s\n", rules,
                   error.c_str());
      return 1;
    }
    report(rules == RuleSet::kMaxRules ? "worst, most rules" : "worst, most states", *worst);
  }
  if (argc > 1) {
    auto presets = RuleSet::parse(joined(argc, argv), &error);
    if (!presets) {
      std::fprintf(stderr, "presets refused: %s\n", error.c_str());
      return 1;
    }
    report("presets", *presets);
  }
  return 0;
}

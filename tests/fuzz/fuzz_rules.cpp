// libFuzzer target: rule sets and patterns. The input is a rule set's JSON text (parsed as a rules
// file is) and, split at the first NUL, a pattern and a subject for the matcher alone. Whatever
// parses is matched against frames, symbols and phase tags made from the input; a parse or a match
// that takes longer than a bound is a failure (the matcher must be linear, never backtracking).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/pattern.h"
#include "core/rules.h"

namespace {

constexpr double kBoundSeconds = 2.0;  // sanitizers included; a linear match takes milliseconds

class Context : public gpusleep::SiteContext {
 public:
  explicit Context(std::string_view text) {
    for (int i = 0; i < 4; ++i) {
      std::string s(text.substr(0, 16));
      s += std::to_string(i);
      symbols_.push_back(s);
      frames_.push_back({s, s, "/x/" + s + ".py", i});
    }
  }
  const std::vector<gpusleep::PyFrame>& python_frames() override { return frames_; }
  const std::vector<std::string>& native_symbols() override { return symbols_; }
  bool capturing() override { return false; }
  std::shared_ptr<const gpusleep::CallSite> call_site() override { return nullptr; }

 private:
  std::vector<gpusleep::PyFrame> frames_;
  std::vector<std::string> symbols_;
};

void check_time(std::chrono::steady_clock::time_point start, const char* what) {
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (s > kBoundSeconds) {
    std::fprintf(stderr, "fuzz: %s took %.3f s\n", what, s);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto start = std::chrono::steady_clock::now();
  const std::size_t nul = input.find('\0');
  if (nul != std::string_view::npos) {
    std::string error;
    auto p = gpusleep::Pattern::compile(input.substr(0, nul), &error);
    check_time(start, "compiling a pattern");
    if (p) {
      // A long subject made of the pattern's own bytes, the worst case for most patterns.
      std::string subject(input.substr(nul + 1));
      while (!subject.empty() && subject.size() < 1024)
        subject += subject;
      start = std::chrono::steady_clock::now();
      p->search(subject);
      check_time(start, "a search");
    }
    return 0;
  }
  std::string error;
  auto set = gpusleep::RuleSet::parse(std::string(input), &error);
  check_time(start, "parsing a rule set");
  if (set == nullptr) return 0;
  Context context(input);
  start = std::chrono::steady_clock::now();
  for (std::uint64_t seq = 0; seq < 3; ++seq)
    set->match(gpusleep::AllocationFacts{std::size_t{1} << (seq * 10), 0, seq,
                                         std::string(input.substr(0, 16))},
               &context);
  check_time(start, "matching a rule set");
  return 0;
}

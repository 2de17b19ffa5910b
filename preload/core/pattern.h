// Regular expressions that cannot backtrack: the patterns of tagging rules and of requests are
// compiled to a small automaton and run as a Pike VM, so a match costs at most (subject length) x
// (states) steps whatever the pattern. The syntax is a subset of POSIX ERE (docs/tagging.md);
// anything outside it is refused when the pattern is compiled, never guessed at.
#pragma once

#include <bitset>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gpusleep {

class Pattern {
 public:
  static constexpr std::size_t kMaxLength = 1024;  // characters of pattern text
  static constexpr std::size_t kMaxStates = 2000;  // automaton states after expanding {m,n}
  static constexpr int kMaxRepeat = 100;           // largest m or n in {m,n}
  static constexpr int kMaxNesting = 32;           // groups inside groups

  // Compiles `text`: literals, `.`, bracket classes (ranges, negation, \d \w \s inside), `^`, `$`,
  // groups `(...)` and `(?:...)`, `|`, `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`, escapes of
  // punctuation, `\d \D \w \W \s \S \t \n \r`. Returns nullopt with the reason and the offset in
  // *error for anything else (backreferences, lookaround, lazy quantifiers, word boundaries, ...),
  // for text longer than kMaxLength, and for automata larger than kMaxStates.
  static std::optional<Pattern> compile(std::string_view text, std::string* error);

  // Whether the pattern matches somewhere in `subject` (`^` and `$` anchor at its start and end).
  // Time at most proportional to subject.size() x states(); no recursion. Thread-safe.
  bool search(std::string_view subject) const;

  const std::string& text() const { return text_; }
  std::size_t states() const { return program_.size(); }

  struct Instruction {
    enum Op : std::uint8_t { kByte, kAny, kClass, kSplit, kJump, kBegin, kEnd, kMatch };
    Op op = kMatch;
    unsigned char byte = 0;
    std::uint32_t x = 0;  // kClass: class index; kSplit, kJump: target
    std::uint32_t y = 0;  // kSplit: second target
  };

 private:
  Pattern() = default;
  friend class PatternCompiler;

  std::string text_;
  std::vector<Instruction> program_;
  std::vector<std::bitset<256>> classes_;
};

}  // namespace gpusleep

// Patterns that cannot backtrack: the syntax they accept (checked against what std::regex says on
// the same subjects), what they refuse and why, and that a pattern built to make a backtracking
// matcher run for ever is answered in linear time.
#include <catch2/catch.hpp>

#include <chrono>
#include <regex>

#include "core/pattern.h"

namespace gpusleep {
namespace {

Pattern compiled(const std::string& text) {
  std::string error;
  std::optional<Pattern> p = Pattern::compile(text, &error);
  INFO(text << ": " << error);
  REQUIRE(p.has_value());
  return std::move(*p);
}

std::string refused(const std::string& text) {
  std::string error;
  std::optional<Pattern> p = Pattern::compile(text, &error);
  INFO(text);
  CHECK_FALSE(p.has_value());
  return error;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

TEST_CASE("patterns match as the same ECMAScript regex does on the syntax they share") {
  const std::vector<std::string> patterns = {
      "abc",
      "^abc$",
      "a.c",
      "a|b|cd",
      "^(ab|cd)*$",
      "x+y",
      "colou?r",
      "^a{2}$",
      "^a{2,}$",
      "^a{2,3}$",
      "[a-c]+",
      "[^a-c]",
      "\\.",
      "\\d+\\.\\d",
      "\\w+:\\s",
      "[\\d_]x",
      "^$",
      "(?:ab)+c",
      "a*b*c*$",
      "[a-]",
      "^torch\\.nn\\.(modules\\.|parameter$)",
      "(\\.__init__|\\.reset_parameters|\\.__new__)$",
      "^Module\\.(to|cuda|_apply)$",
      "^(|a)b",
      "(a*)*b",
      "\\S+\\W",
      "[\\]\\-]",
      "\\D\\s",
  };
  const std::vector<std::string> subjects = {
      "",
      "abc",
      "xabcx",
      "ac",
      "aXc",
      "b",
      "cd",
      "abcd",
      "abab",
      "xxy",
      "color",
      "colour",
      "aa",
      "aaa",
      "aaaa",
      "d",
      "a.b",
      "3.1",
      "key: v",
      "5x",
      "_x",
      "ababc",
      "]",
      "-",
      "torch.nn.modules.linear",
      "torch.nn.parameter",
      "Linear.__init__",
      "Module.to",
      "Module.top",
      "ab",
      "aab",
      "x y",
      "a\tb",
      "é",
  };
  for (const std::string& p : patterns) {
    const Pattern ours = compiled(p);
    const std::regex theirs(p, std::regex::ECMAScript);
    for (const std::string& s : subjects) {
      INFO("pattern " << p << " on '" << s << "'");
      CHECK(ours.search(s) == std::regex_search(s, theirs));
    }
  }
}

TEST_CASE("what the matcher does not support is refused with the reason and the offset") {
  CHECK(refused("(a)\\1").find("backreferences") != std::string::npos);
  CHECK(refused("a(?=b)").find("(?...) is not supported") != std::string::npos);
  CHECK(refused("a(?!b)").find("at offset 2") != std::string::npos);
  CHECK(refused("a*?").find("a quantifier cannot follow a quantifier") != std::string::npos);
  CHECK(refused("a++").find("a quantifier cannot follow a quantifier") != std::string::npos);
  CHECK(refused("\\bword").find("word boundaries") != std::string::npos);
  CHECK(refused("[[:alpha:]]").find("[:class:]") != std::string::npos);
  CHECK(refused("\\q").find("unknown escape") != std::string::npos);
  CHECK(refused("*a").find("nothing to repeat") != std::string::npos);
  CHECK(refused("(ab").find("missing ')'") != std::string::npos);
  CHECK(refused("ab)").find("unbalanced ')'") != std::string::npos);
  CHECK(refused("[ab").find("missing ']'") != std::string::npos);
  CHECK(refused("[z-a]").find("below its start") != std::string::npos);
  CHECK(refused("a{3,2}").find("n below m") != std::string::npos);
  CHECK(refused("a{101}").find("above 100") != std::string::npos);
  CHECK(refused("a{2").find("'}'") != std::string::npos);
  CHECK(refused("^*").find("anchor") != std::string::npos);
  CHECK(refused("ab\\").find("trailing backslash") != std::string::npos);
  CHECK(refused(std::string(Pattern::kMaxLength + 1, 'a')).find("longer than") !=
        std::string::npos);
  CHECK(refused(std::string(Pattern::kMaxNesting + 1, '(') + "a" +
                std::string(Pattern::kMaxNesting + 1, ')'))
            .find("nested deeper") != std::string::npos);
  CHECK(refused("(((a{100}){100}){100})").find("too complex") != std::string::npos);
  CHECK(refused("(a|b|c|d){100}(e|f|g|h){100}").find("too complex") != std::string::npos);
}

TEST_CASE("patterns that make a backtracking matcher run for ever are answered in linear time") {
  // Each of these takes std::regex exponential time on the subject below (or exhausts its stack).
  const std::string subject(20000, 'a');
  for (const std::string text : {"^(.|.|.|.)*!", "(a*)*b", "^(a|aa)+$b", "(a|a?)+c", "(.*){20}x"}) {
    const Pattern p = compiled(text);
    const auto t = std::chrono::steady_clock::now();
    CHECK_FALSE(p.search(subject));
    INFO(text);
    CHECK(seconds_since(t) < 2.0);  // linear: a few milliseconds; a backtracker: never
  }
  CHECK(compiled("^(.|.|.|.)*!").search(subject + "!"));
}

TEST_CASE("a closing bracket first in a bracket expression is a member, as in POSIX") {
  const Pattern p = compiled("^[]x]+$");
  CHECK(p.search("]x]"));
  CHECK_FALSE(p.search("]y"));
}

}  // namespace gpusleep

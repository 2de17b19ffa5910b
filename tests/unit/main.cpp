// The unit tests' entry point: Catch2, or with --print-options-markdown the text of
// docs/options.md rendered from the option table.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>

#include "options_markdown.h"

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--print-options-markdown") == 0) {
    std::fputs(gpusleep::test::options_markdown().c_str(), stdout);
    return 0;
  }
  return Catch::Session().run(argc, argv);
}

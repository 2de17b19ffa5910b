// Test helper: a fresh directory under /tmp, removed with everything in it at scope exit.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>

namespace gpusleep::test {

struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/gpusleep-test-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string path;
};

}  // namespace gpusleep::test

// Logging: the line format, the 1 KiB cut, and the bound on the rate of lines.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "base/log.h"

using namespace gpusleep;

TEST_CASE("log lines carry the pid, are cut at 1 KiB and bounded in rate", "[log]") {
  std::vector<std::string> lines;
  log_set_sink([&](std::string_view line) { lines.emplace_back(line); });
  log_set_level(LogLevel::kWarn);
  GS_INFO("not shown at warn");
  CHECK(lines.empty());
  for (int i = 0; i < 1000; ++i)
    GS_WARN("failure %d", i);
  CHECK(lines.size() <= static_cast<std::size_t>(kLogBurst + 2));
  CHECK(lines.size() >= static_cast<std::size_t>(kLogBurst));
  CHECK(lines[0].find("gpusleep[" + std::to_string(getpid()) + "] warn: failure 0") == 0);
  GS_ERROR("%s", std::string(5000, 'z').c_str());
  log_set_sink(nullptr);
  log_set_sink([&](std::string_view line) { lines.emplace_back(line); });
  GS_ERROR("after the flood");
  CHECK(lines.back().find("after the flood") != std::string::npos);
  GS_ERROR("%s", std::string(5000, 'z').c_str());
  CHECK(lines.back().size() <= 1280);
  CHECK(lines.back().back() == '\n');
  log_set_sink(nullptr);
}

TEST_CASE("suppressed log lines are counted in the next line that gets through", "[log]") {
  std::vector<std::string> lines;
  log_set_sink([&](std::string_view line) { lines.emplace_back(line); });
  log_set_level(LogLevel::kWarn);
  for (int i = 0; i < kLogBurst + 50; ++i)
    GS_WARN("x");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  GS_WARN("resumed");
  CHECK(lines.back().find("earlier lines suppressed") != std::string::npos);
  log_set_sink(nullptr);
}

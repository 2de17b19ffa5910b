// Options, policies and logging: parsing, rejection of bad values, documentation coverage, and
// the bound on log lines.
#include <catch2/catch.hpp>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/log.h"
#include "core/options.h"
#include "core/policy.h"

using namespace gpusleep;

TEST_CASE("options are read from GPUSLEEP_ variables", "[options]") {
  const char* env[] = {"GPUSLEEP_LOG_LEVEL=debug",
                       "GPUSLEEP_DEFAULT_TAG=weights",
                       "GPUSLEEP_POLICY=kv_cache=offload,scratch=discard",
                       "GPUSLEEP_COPY_CHUNK=16M",
                       "GPUSLEEP_COPY_STREAMS=2",
                       "GPUSLEEP_KEEP_MIRRORS=off",
                       "GPUSLEEP_RUNTIME_DIR=/tmp/x",
                       "PATH=/bin",
                       nullptr};
  std::vector<std::string> problems;
  Options o = load_options(env, &problems);
  CHECK(problems.empty());
  CHECK(o.log_level == LogLevel::kDebug);
  CHECK(o.default_tag == "weights");
  CHECK(o.policies.at("kv_cache") == Policy::kOffload);
  CHECK(o.policies.at("scratch") == Policy::kDiscard);
  CHECK(o.copy_chunk == (16u << 20));
  CHECK(o.copy_streams == 2);
  CHECK_FALSE(o.keep_mirrors);
  CHECK(o.runtime_dir == "/tmp/x");
}

TEST_CASE("bad option values and unknown options are reported and the defaults kept", "[options]") {
  const char* env[] = {"GPUSLEEP_COPY_STREAMS=banana",
                       "GPUSLEEP_COPY_CHUNK=3M",
                       "GPUSLEEP_DEFAULT_TAG=has space",
                       "GPUSLEEP_POLICY=kv_cache=maybe",
                       "GPUSLEEP_LOG_LEVEL=loud",
                       "GPUSLEEP_TYPO=1",
                       "GPUSLEEP_RUNTIME_DIR=relative",
                       "GPUSLEEP_MAX_MESSAGE=99999999999G",
                       nullptr};
  std::vector<std::string> problems;
  Options o = load_options(env, &problems);
  CHECK(problems.size() == 8);
  Options defaults;
  CHECK(o.copy_streams == defaults.copy_streams);
  CHECK(o.copy_chunk == defaults.copy_chunk);
  CHECK(o.default_tag == "default");
  CHECK(o.policies.empty());
  CHECK(o.log_level == LogLevel::kWarn);
  CHECK(o.max_message == defaults.max_message);
  bool named_typo = false;
  for (const auto& p : problems)
    named_typo = named_typo || p.find("GPUSLEEP_TYPO") != std::string::npos;
  CHECK(named_typo);
}

TEST_CASE("sizes and booleans parse strictly", "[options]") {
  std::size_t n = 0;
  CHECK(parse_size("4096", &n));
  CHECK(n == 4096);
  CHECK(parse_size("2M", &n));
  CHECK(n == (2u << 20));
  CHECK_FALSE(parse_size("", &n));
  CHECK_FALSE(parse_size("M", &n));
  CHECK_FALSE(parse_size("-1", &n));
  CHECK_FALSE(parse_size("1.5G", &n));
  CHECK_FALSE(parse_size("20000000000000G", &n));
  bool b = false;
  CHECK(parse_bool("yes", &b));
  CHECK(b);
  CHECK_FALSE(parse_bool("2", &b));
}

TEST_CASE("every option is documented in docs/options.md", "[options]") {
  std::ifstream f(std::string(GPUSLEEP_SOURCE_DIR) + "/docs/options.md");
  REQUIRE(f.good());
  std::stringstream text;
  text << f.rdbuf();
  for (const OptionSpec& spec : option_table()) {
    INFO(spec.name);
    CHECK(text.str().find(spec.name) != std::string::npos);
  }
}

TEST_CASE("policies default to discard for kv_cache and offload otherwise", "[policy]") {
  PolicyTable t;
  CHECK(t.for_tag("kv_cache") == Policy::kDiscard);
  CHECK(t.for_tag("weights") == Policy::kOffload);
  t.set("kv_cache", Policy::kOffload);
  CHECK(t.for_tag("kv_cache") == Policy::kOffload);
  std::map<std::string, Policy> out;
  std::string error;
  CHECK_FALSE(parse_policy_list("weights", &out, &error));
  CHECK(error.find("tag=policy") != std::string::npos);
  CHECK(valid_tag_name("cuda_graph"));
  CHECK_FALSE(valid_tag_name(""));
  CHECK_FALSE(valid_tag_name(std::string(65, 'a')));
  CHECK_FALSE(valid_tag_name("a/b"));
}

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

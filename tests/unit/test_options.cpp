// Options: parsing from the environment, rejection of bad values, documentation coverage.
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

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

// Options: parsing from the environment, defaults and ranges from the one table, rejection of bad
// values, and docs/options.md rendered from the table.
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/options.h"
#include "core/policy.h"
#include "options_markdown.h"
#include "protocol/protocol.h"

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

TEST_CASE("the defaults are the table's, and are the documented ones", "[options]") {
  for (const OptionSpec& spec : option_table()) {
    INFO(spec.name);
    CHECK((spec.default_value != nullptr) != (spec.shown_default != nullptr));
    if (spec.default_value == nullptr) continue;
    Options o;
    std::string error;
    CHECK(spec.apply(spec, o, spec.default_value, &error));
    CHECK(error.empty());
  }
  Options o;
  CHECK(o.log_level == LogLevel::kWarn);
  CHECK(o.default_tag == "default");
  CHECK(o.policies.empty());
  CHECK(o.runtime_dir.empty());
  CHECK(o.rules_file.empty());
  CHECK(o.python_stacks);
  CHECK(o.gate == GateMode::kWait);
  CHECK(o.gate_drain_ms == 10000);
  CHECK_FALSE(o.disable);
  CHECK(o.control);
  CHECK(o.eager_mirrors);
  CHECK(o.keep_mirrors);
  CHECK(o.copy_streams == 4);
  CHECK(o.copy_chunk == (64u << 20));
  CHECK(o.prep_threads == 0);
  CHECK(o.max_message == protocol::kMaxRequest);  // the option's default is the protocol's limit
  CHECK(o.driver_library == "libcuda.so.1");
}

TEST_CASE("values outside an option's range are refused with the range named", "[options]") {
  const char* env[] = {"GPUSLEEP_COPY_STREAMS=17", "GPUSLEEP_GATE_DRAIN_MS=0",
                       "GPUSLEEP_COPY_CHUNK=512M", "GPUSLEEP_MAX_MESSAGE=1023",
                       "GPUSLEEP_PREP_THREADS=65", nullptr};
  std::vector<std::string> problems;
  Options o = load_options(env, &problems);
  REQUIRE(problems.size() == 5);
  CHECK(problems[0] == "GPUSLEEP_COPY_STREAMS='17' ignored: expected an integer from 1 to 16");
  CHECK(problems[1] ==
        "GPUSLEEP_GATE_DRAIN_MS='0' ignored: expected milliseconds from 1 to 3600000");
  CHECK(problems[2] ==
        "GPUSLEEP_COPY_CHUNK='512M' ignored: expected a power of two from 2M to 256M");
  CHECK(problems[3] == "GPUSLEEP_MAX_MESSAGE='1023' ignored: expected a size from 1K to 16M");
  CHECK(problems[4] == "GPUSLEEP_PREP_THREADS='65' ignored: expected an integer from 0 to 64");
  const char* ends[] = {"GPUSLEEP_COPY_STREAMS=16", "GPUSLEEP_GATE_DRAIN_MS=3600000",
                        "GPUSLEEP_COPY_CHUNK=2M",   "GPUSLEEP_MAX_MESSAGE=16M",
                        "GPUSLEEP_PREP_THREADS=0",  nullptr};
  problems.clear();
  o = load_options(ends, &problems);
  CHECK(problems.empty());
  CHECK(o.copy_streams == 16);
  CHECK(o.gate_drain_ms == 3600000);
  CHECK(o.copy_chunk == (2u << 20));
  CHECK(o.max_message == (16u << 20));
}

namespace {

// The lines of `a` and `b` that differ, as "-" and "+" lines with their line numbers.
std::string line_diff(const std::string& a, const std::string& b) {
  std::istringstream sa(a), sb(b);
  std::string la, lb, out;
  for (int n = 1; sa.good() || sb.good(); ++n) {
    bool ha = static_cast<bool>(std::getline(sa, la));
    bool hb = static_cast<bool>(std::getline(sb, lb));
    if (!ha) la = "(end)";
    if (!hb) lb = "(end)";
    if (la != lb && (ha || hb))
      out += std::to_string(n) + " - " + la + "\n" + std::to_string(n) + " + " + lb + "\n";
  }
  return out;
}

}  // namespace

TEST_CASE("docs/options.md is the option table rendered", "[options]") {
  std::ifstream f(std::string(GPUSLEEP_SOURCE_DIR) + "/docs/options.md");
  REQUIRE(f.good());
  std::stringstream text;
  text << f.rdbuf();
  const std::string rendered = test::options_markdown();
  INFO(
      "docs/options.md (-) differs from the table (+); regenerate it with\n"
      "  build/tests/unit/unit_tests --print-options-markdown > docs/options.md\n"
      << line_diff(text.str(), rendered));
  CHECK(text.str() == rendered);
  for (const OptionSpec& spec : option_table()) {
    INFO(spec.name);
    CHECK(rendered.find(std::string("| `") + spec.name + "` |") != std::string::npos);
  }
}

// GPUSLEEP_* options: one table, read once from the environment, documented in docs/options.md.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/gate.h"
#include "base/log.h"
#include "core/policy.h"

namespace gpusleep {

struct Options {
  LogLevel log_level = LogLevel::kWarn;
  std::string default_tag = "default";
  std::map<std::string, Policy> policies;  // overrides of the built-in tag policies
  std::string runtime_dir;                 // empty: $XDG_RUNTIME_DIR/gpusleep or /tmp/gpusleep-UID
  bool disable = false;                    // every allocation goes to the real allocator
  bool control = true;                     // start the control server
  bool eager_mirrors = true;               // prepare host mirrors in the background at allocation
  bool keep_mirrors = true;                // keep mirrors pinned after wake for the next sleep
  int copy_streams = 4;                    // copy streams per device
  std::size_t copy_chunk = 64u << 20;      // bytes per copy call; a power of two, 2 MiB..256 MiB
  int prep_threads = 0;                    // mirror preparation threads; 0: chosen from the CPUs
  std::size_t max_message = 64u << 10;     // largest control request accepted, in bytes
  std::string driver_library = "libcuda.so.1";
  std::string rules_file;           // tagging rules (JSON); empty: none
  bool python_stacks = true;        // read the Python frames of each allocation
  GateMode gate = GateMode::kWait;  // GPU work submitted while memory is asleep
  int gate_drain_ms = 10000;        // how long a sleep waits for host threads to leave GPU calls
};

struct OptionSpec {
  const char* name;          // environment variable
  const char* default_text;  // as documented
  const char* help;          // one line
  // Applies a value. On a bad value returns false with the reason in *error and changes nothing.
  bool (*apply)(Options& options, std::string_view value, std::string* error);
};

// Every option, in documentation order.
const std::vector<OptionSpec>& option_table();

// Reads the GPUSLEEP_* entries of `env` (a null-terminated "NAME=value" array, like environ).
// Unknown GPUSLEEP_ names and invalid values are reported in *problems; the option keeps its
// default.
Options load_options(const char* const* env, std::vector<std::string>* problems);

// "123", "64K", "2M", "1G" (powers of 1024). Returns false on anything else or overflow.
bool parse_size(std::string_view text, std::size_t* out);
// "1/0", "true/false", "yes/no", "on/off".
bool parse_bool(std::string_view text, bool* out);

}  // namespace gpusleep

// GPUSLEEP_* options: one table, read once from the environment, documented in docs/options.md.
#pragma once

#include <cstddef>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/log.h"
#include "core/gate.h"
#include "core/host_budget.h"
#include "core/mirror.h"
#include "core/policy.h"

namespace gpusleep {

// Every field but host_budget_ledger is an option of the table below; the table alone holds the
// defaults.
struct Options {
  Options();  // every option at its default (the table's default_value)

  LogLevel log_level;
  std::string default_tag;
  std::map<std::string, Policy> policies;  // overrides of the built-in tag policies
  std::string runtime_dir;                 // empty: $XDG_RUNTIME_DIR/gpusleep or /tmp/gpusleep-UID
  bool disable;                            // every allocation goes to the real allocator
  bool control;                            // start the control server
  bool eager_mirrors;                      // prepare host mirrors in the background at allocation
  bool keep_mirrors;                       // keep mirrors pinned after wake for the next sleep
  int copy_streams;                        // copy streams per device
  std::size_t copy_chunk;                  // bytes per copy call
  int prep_threads;                        // mirror preparation threads; 0: chosen from the CPUs
  std::size_t max_message;                 // largest control request accepted, in bytes
  std::string driver_library;
  std::string rules_file;              // tagging rules (JSON); empty: none
  bool python_stacks;                  // read the Python frames of each allocation
  GateMode gate;                       // GPU work submitted while memory is asleep
  int gate_drain_ms;                   // how long a sleep waits for host threads to leave GPU calls
  BudgetSetting host_budget;           // pinned host memory for the node's gpusleep processes
  std::string host_budget_ledger;      // the node's ledger file (set by process setup; empty: none)
  std::string spill_dir;               // disk tier; empty: none
  bool pageable;                       // past the budget, copy into pageable host memory
  PrepPacing::Priority prep_priority;  // background helpers
  std::size_t prep_rate;               // background preparation, bytes a second; 0: no bound
  int prep_settle_ms;                  // background preparation waits this long after an allocation
};

// The accepted values of an integer or size option, both ends included.
struct OptionRange {
  long long min = 0;
  long long max = 0;
  bool bytes = false;  // a size: bounds are written "2M", "16M"
};

// One option: its name, default, parser with its range, and its documentation. docs/options.md is
// rendered from these rows (a unit test compares them; docs/testing.md says how to regenerate).
struct OptionSpec {
  const char* name;           // the environment variable, GPUSLEEP_...
  const char* default_value;  // parsed like a value from the environment; nullptr: none (empty)
  const char* shown_default;  // the default as documented (Markdown); nullptr: `default_value`
  // What it does and the values it takes (Markdown, one paragraph); "{min}" and "{max}" stand
  // for the ends of the range.
  const char* doc;
  // Applies a value. On a bad value returns false with the reason in *error and changes nothing.
  bool (*apply)(const OptionSpec& spec, Options& options, std::string_view value,
                std::string* error);
  OptionRange range{};  // integer and size options only
};

// A bound of `range` as documented and in messages: "16", or for sizes "64K", "2M", "1G".
std::string range_bound_text(const OptionRange& range, long long bound);

// Every option, in documentation order.
std::span<const OptionSpec> option_table();

// Reads the GPUSLEEP_* entries of `env` (a null-terminated "NAME=value" array, like environ).
// Unknown GPUSLEEP_ names and invalid values are reported in *problems; the option keeps its
// default.
Options load_options(const char* const* env, std::vector<std::string>* problems);

// "123", "64K", "2M", "1G" (powers of 1024). Returns false on anything else or overflow.
bool parse_size(std::string_view text, std::size_t* out);
// "1/0", "true/false", "yes/no", "on/off".
bool parse_bool(std::string_view text, bool* out);

}  // namespace gpusleep

// Starting programs under the library: where libgpusleep.so and the presets are, and
// `gpusleep run`.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace gpusleep::cli {

// Where libgpusleep.so is, in this order: $GPUSLEEP_LIBRARY; DIR/lib/libgpusleep.so and
// DIR/../lib/libgpusleep.so, DIR being the directory of the gpusleep executable (a Python
// wheel keeps both in its package; a CMake install and the build tree keep bin/ beside lib/).
// Empty when not found; *looked (when given) lists the places tried.
std::string find_library(std::string* looked = nullptr);

// `gpusleep --print-library`: prints the path, or says where it looked (exit 1).
int print_library();

// The presets of `gpusleep run --preset auto`, in the order their rules apply: nccl first (its
// buffers must pass through before any other rule tags them), then the servers' presets by
// name, then pytorch (the most general).
std::vector<std::string> auto_presets();

// Whether `argv0` runs Python: its name starts with "python", or it is a script whose "#!" line
// names python (pip's console scripts: vllm, torchrun, ...).
bool is_python_command(const std::string& argv0);

struct RunOptions {
  std::optional<std::string> tag;
  std::optional<std::string> policy;
  std::optional<std::string> log_level;
  std::optional<std::string> rules_file;
  std::vector<std::string> presets;  // in order; "auto" and "none" are special
  std::vector<std::string> command;
};

// `gpusleep run`: execs the command with the library preloaded; returns only on failure.
int run(const RunOptions& o);

}  // namespace gpusleep::cli

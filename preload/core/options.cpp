// The option table and its parsers.
#include "core/options.h"

#include <charconv>
#include <cstring>

namespace gpusleep {

bool parse_size(std::string_view text, std::size_t* out) {
  if (text.empty()) return false;
  std::size_t shift = 0;
  char last = text.back();
  if (last == 'K' || last == 'k') shift = 10;
  if (last == 'M' || last == 'm') shift = 20;
  if (last == 'G' || last == 'g') shift = 30;
  if (shift != 0) text.remove_suffix(1);
  if (text.empty()) return false;
  unsigned long long value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size()) return false;
  if (shift != 0 && value > (~0ull >> shift)) return false;
  *out = static_cast<std::size_t>(value << shift);
  return true;
}

bool parse_bool(std::string_view text, bool* out) {
  for (const char* yes : {"1", "true", "yes", "on"}) {
    if (text == yes) {
      *out = true;
      return true;
    }
  }
  for (const char* no : {"0", "false", "no", "off"}) {
    if (text == no) {
      *out = false;
      return true;
    }
  }
  return false;
}

namespace {

bool parse_int(std::string_view text, int lo, int hi, int* out) {
  int value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || value < lo || value > hi)
    return false;
  *out = value;
  return true;
}

bool set_bool(bool* field, std::string_view value, std::string* error) {
  if (parse_bool(value, field)) return true;
  *error = "expected 1/0, true/false, yes/no or on/off";
  return false;
}

const std::vector<OptionSpec> kOptions = {
    {"GPUSLEEP_LOG_LEVEL", "warn", "log level: off, error, warn, info or debug",
     [](Options& o, std::string_view v, std::string* e) {
       if (parse_log_level(v, &o.log_level)) return true;
       *e = "expected off, error, warn, info or debug";
       return false;
     }},
    {"GPUSLEEP_DEFAULT_TAG", "default", "tag given to allocations while no phase tag is set",
     [](Options& o, std::string_view v, std::string* e) {
       if (!valid_tag_name(v)) {
         *e = "a tag is 1-64 characters from A-Z a-z 0-9 _ . : -";
         return false;
       }
       o.default_tag = std::string(v);
       return true;
     }},
    {"GPUSLEEP_POLICY", "kv_cache=discard",
     "per-tag policy overrides, e.g. 'kv_cache=offload,scratch=discard'; other tags offload",
     [](Options& o, std::string_view v, std::string* e) {
       return parse_policy_list(v, &o.policies, e);
     }},
    {"GPUSLEEP_RUNTIME_DIR", "$XDG_RUNTIME_DIR/gpusleep or /tmp/gpusleep-UID",
     "directory of the control sockets; must be owned by the user with mode 0700",
     [](Options& o, std::string_view v, std::string* e) {
       if (v.empty() || v[0] != '/') {
         *e = "expected an absolute path";
         return false;
       }
       o.runtime_dir = std::string(v);
       return true;
     }},
    {"GPUSLEEP_RULES", "",
     "tagging rules: a JSON file (docs/tagging.md), reloadable over the socket",
     [](Options& o, std::string_view v, std::string*) {
       o.rules_file = std::string(v);
       return true;
     }},
    {"GPUSLEEP_PYTHON_STACKS", "1",
     "read the Python frames of each allocation, for rules and call sites (0: native only)",
     [](Options& o, std::string_view v, std::string* e) {
       return set_bool(&o.python_stacks, v, e);
     }},
    {"GPUSLEEP_GATE", "wait",
     "GPU work submitted while memory is asleep: wait (until a wake), wake (on demand) or off",
     [](Options& o, std::string_view v, std::string* e) {
       if (parse_gate_mode(v, &o.gate)) return true;
       *e = "expected wait, wake or off";
       return false;
     }},
    {"GPUSLEEP_GATE_DRAIN_MS", "10000",
     "how long a sleep waits for host threads to leave GPU calls before it fails (ms)",
     [](Options& o, std::string_view v, std::string* e) {
       if (parse_int(v, 1, 3600000, &o.gate_drain_ms)) return true;
       *e = "expected milliseconds from 1 to 3600000";
       return false;
     }},
    {"GPUSLEEP_DISABLE", "0", "1: pass every allocation to the real allocator (no regions)",
     [](Options& o, std::string_view v, std::string* e) { return set_bool(&o.disable, v, e); }},
    {"GPUSLEEP_CONTROL", "1", "0: start no control server",
     [](Options& o, std::string_view v, std::string* e) { return set_bool(&o.control, v, e); }},
    {"GPUSLEEP_EAGER_MIRRORS", "1",
     "prepare pinned host mirrors of offload regions in the background as they are allocated",
     [](Options& o, std::string_view v, std::string* e) {
       return set_bool(&o.eager_mirrors, v, e);
     }},
    {"GPUSLEEP_KEEP_MIRRORS", "1",
     "keep host mirrors pinned after wake (0: free them, the next sleep prepares them again)",
     [](Options& o, std::string_view v, std::string* e) {
       return set_bool(&o.keep_mirrors, v, e);
     }},
    {"GPUSLEEP_COPY_STREAMS", "4", "copy streams per device (1-16)",
     [](Options& o, std::string_view v, std::string* e) {
       if (parse_int(v, 1, 16, &o.copy_streams)) return true;
       *e = "expected an integer from 1 to 16";
       return false;
     }},
    {"GPUSLEEP_COPY_CHUNK", "64M", "bytes per copy call: a power of two from 2M to 256M",
     [](Options& o, std::string_view v, std::string* e) {
       std::size_t n = 0;
       if (parse_size(v, &n) && n >= (2u << 20) && n <= (256u << 20) && (n & (n - 1)) == 0) {
         o.copy_chunk = n;
         return true;
       }
       *e = "expected a power of two from 2M to 256M";
       return false;
     }},
    {"GPUSLEEP_PREP_THREADS", "0", "threads that prepare host mirrors (0: half the CPUs, 2 to 16)",
     [](Options& o, std::string_view v, std::string* e) {
       if (parse_int(v, 0, 64, &o.prep_threads)) return true;
       *e = "expected an integer from 0 to 64";
       return false;
     }},
    {"GPUSLEEP_MAX_MESSAGE", "64K", "largest control request accepted (1K to 16M)",
     [](Options& o, std::string_view v, std::string* e) {
       std::size_t n = 0;
       if (parse_size(v, &n) && n >= 1024 && n <= (16u << 20)) {
         o.max_message = n;
         return true;
       }
       *e = "expected a size from 1K to 16M";
       return false;
     }},
    {"GPUSLEEP_DRIVER_LIBRARY", "libcuda.so.1", "the CUDA driver library to load",
     [](Options& o, std::string_view v, std::string* e) {
       if (v.empty()) {
         *e = "expected a library name or path";
         return false;
       }
       o.driver_library = std::string(v);
       return true;
     }},
};

}  // namespace

const std::vector<OptionSpec>& option_table() {
  return kOptions;
}

Options load_options(const char* const* env, std::vector<std::string>* problems) {
  Options options;
  // The library path itself is set by the CLI's `run`; it is not an option of the library.
  static constexpr std::string_view kNotOptions[] = {"GPUSLEEP_LIBRARY"};
  for (; env != nullptr && *env != nullptr; ++env) {
    std::string_view entry(*env);
    if (entry.rfind("GPUSLEEP_", 0) != 0) continue;
    size_t eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view name = entry.substr(0, eq);
    std::string_view value = entry.substr(eq + 1);
    bool known = false;
    for (std::string_view skip : kNotOptions)
      known = known || name == skip;
    for (const OptionSpec& spec : kOptions) {
      if (name != spec.name) continue;
      known = true;
      std::string error;
      if (!spec.apply(options, value, &error)) {
        problems->push_back(std::string(name) + "='" + std::string(value) + "' ignored: " + error);
      }
    }
    if (!known) problems->push_back("unknown option " + std::string(name) + " ignored");
  }
  return options;
}

}  // namespace gpusleep

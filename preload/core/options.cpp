// The option table and its parsers.
#include "core/options.h"

#include <charconv>
#include <utility>

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

std::string range_bound_text(const OptionRange& range, long long bound) {
  if (range.bytes) {
    for (auto [shift, suffix] : {std::pair{30, "G"}, std::pair{20, "M"}, std::pair{10, "K"}}) {
      if (bound != 0 && bound % (1ll << shift) == 0) return std::to_string(bound >> shift) + suffix;
    }
  }
  return std::to_string(bound);
}

namespace {

// The error of a value outside `spec`'s range: "expected an integer from 1 to 16".
std::string out_of_range(const OptionSpec& spec, const char* what) {
  return std::string("expected ") + what + " from " + range_bound_text(spec.range, spec.range.min) +
         " to " + range_bound_text(spec.range, spec.range.max);
}

constexpr char kInteger[] = "an integer";
constexpr char kMilliseconds[] = "milliseconds";
constexpr char kSize[] = "a size";
constexpr char kPowerOfTwo[] = "a power of two";

template <auto Field>
bool apply_bool(const OptionSpec&, Options& o, std::string_view v, std::string* e) {
  if (parse_bool(v, &(o.*Field))) return true;
  *e = "expected 1/0, true/false, yes/no or on/off";
  return false;
}

template <auto Field, const char* What>
bool apply_int(const OptionSpec& spec, Options& o, std::string_view v, std::string* e) {
  long long value = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), value);
  if (ec == std::errc() && ptr == v.data() + v.size() && value >= spec.range.min &&
      value <= spec.range.max) {
    o.*Field = static_cast<int>(value);
    return true;
  }
  *e = out_of_range(spec, What);
  return false;
}

template <auto Field, const char* What, bool PowerOfTwo = false>
bool apply_size(const OptionSpec& spec, Options& o, std::string_view v, std::string* e) {
  std::size_t n = 0;
  if (parse_size(v, &n) && n >= static_cast<std::size_t>(spec.range.min) &&
      n <= static_cast<std::size_t>(spec.range.max) && (!PowerOfTwo || (n & (n - 1)) == 0)) {
    o.*Field = n;
    return true;
  }
  *e = out_of_range(spec, What);
  return false;
}

// One row per option: name, default, how the default is documented when it is not a value,
// documentation, parser, range. Constant-initialized: no code runs before main.
constexpr OptionSpec kOptions[] = {
    {"GPUSLEEP_LOG_LEVEL", "warn", nullptr,
     "`off`, `error`, `warn`, `info` or `debug`. Lines go to stderr as `gpusleep[PID] LEVEL: "
     "message`, at most 1 KiB each; a burst of 64 lines, then 10 a second, and the count of lines "
     "held back is given on the next line that gets out.",
     [](const OptionSpec&, Options& o, std::string_view v, std::string* e) {
       if (parse_log_level(v, &o.log_level)) return true;
       *e = "expected off, error, warn, info or debug";
       return false;
     }},
    {"GPUSLEEP_DEFAULT_TAG", "default", nullptr,
     "The tag of allocations made while no phase tag is set (`gpusleep tag`). A tag is 1–64 "
     "characters from `A-Z a-z 0-9 _ . : -`.",
     [](const OptionSpec&, Options& o, std::string_view v, std::string* e) {
       if (!valid_tag_name(v)) {
         *e = "a tag is 1-64 characters from A-Z a-z 0-9 _ . : -";
         return false;
       }
       o.default_tag = std::string(v);
       return true;
     }},
    {"GPUSLEEP_POLICY", nullptr, "`kv_cache=discard`",
     "Per-tag policy overrides, `tag=policy` separated by commas, e.g. "
     "`kv_cache=offload,scratch=discard`. `offload` copies the contents to host memory at sleep "
     "and restores them at wake; `discard` drops them (wake gives fresh memory). Tags not named "
     "offload, except `kv_cache`, which discards unless overridden.",
     [](const OptionSpec&, Options& o, std::string_view v, std::string* e) {
       return parse_policy_list(v, &o.policies, e);
     }},
    {"GPUSLEEP_RUNTIME_DIR", nullptr, "`$XDG_RUNTIME_DIR/gpusleep`, else `/tmp/gpusleep-UID`",
     "Where the control sockets are (`PID.sock`). Created with mode 0700 if missing; refused if "
     "it is owned by another user, is not a directory, or is open to group or others. The CLI "
     "reads the same variable.",
     [](const OptionSpec&, Options& o, std::string_view v, std::string* e) {
       if (v.empty() || v[0] != '/') {
         *e = "expected an absolute path";
         return false;
       }
       o.runtime_dir = std::string(v);
       return true;
     }},
    {"GPUSLEEP_RULES", nullptr, "(none)",
     "A JSON file of tagging rules (docs/tagging.md), read at start and again on `gpusleep rules "
     "reload`. A file that cannot be read or parsed is reported (rule and field named) and the "
     "process runs on with the rules it had. `gpusleep run --preset NAME` and `--rules FILE` set "
     "it.",
     [](const OptionSpec&, Options& o, std::string_view v, std::string*) {
       o.rules_file = std::string(v);
       return true;
     }},
    {"GPUSLEEP_PYTHON_STACKS", "1", nullptr,
     "Read the Python frames of each allocation (for rules and the call sites `gpusleep regions` "
     "shows), through the interpreter already in the process and only by a thread holding the "
     "GIL: the allocating thread when it holds it, else a helper thread that waits at most 100 ms "
     "for the GIL (the allocation then gets no Python frames). `0`: native frames only.",
     apply_bool<&Options::python_stacks>},
    {"GPUSLEEP_GATE", "wait", nullptr,
     "What happens to GPU work the program submits (kernel and graph launches, copies, memsets, "
     "at the runtime and driver levels) while any of its memory is asleep: `wait` holds the "
     "calling thread until a wake, logging one line after 5 s and then at most one a minute; "
     "`wake` wakes every asleep tag on demand, on a thread of the library, and retries each "
     "second while the wake fails (memory held elsewhere); `off` lets it through, and a kernel "
     "touching released memory faults the context. A `sleep --no-gate` request leaves the gate "
     "open for its tags (docs/reliability.md).",
     [](const OptionSpec&, Options& o, std::string_view v, std::string* e) {
       if (parse_gate_mode(v, &o.gate)) return true;
       *e = "expected wait, wake or off";
       return false;
     }},
    {"GPUSLEEP_GATE_DRAIN_MS",
     "10000",
     nullptr,
     "How long a sleep waits for threads already inside such a call (a long synchronous copy) "
     "before it fails with `gpu_busy`, changing nothing; {min} to {max}.",
     apply_int<&Options::gate_drain_ms, kMilliseconds>,
     {1, 3600000}},
    {"GPUSLEEP_DISABLE", "0", nullptr,
     "`1`: manage nothing; every allocation goes to the real allocator and no control socket is "
     "opened.",
     apply_bool<&Options::disable>},
    {"GPUSLEEP_CONTROL", "1", nullptr, "`0`: manage allocations but open no control socket.",
     apply_bool<&Options::control>},
    {"GPUSLEEP_EAGER_MIRRORS", "1", nullptr,
     "Prepare (allocate and pin) the host mirror of each `offload` region in the background once "
     "the program's allocations have settled (`GPUSLEEP_PREP_SETTLE_MS`), within the host budget, "
     "on at most four idle-priority threads, at most `GPUSLEEP_PREP_RATE` a second, leaving at "
     "least 4 GiB of host memory available. The first sleep then copies at link speed instead of "
     "waiting for pinning. Regions of `discard` and `spill` tags get no mirror. `0`: prepare "
     "mirrors at the first sleep.",
     apply_bool<&Options::eager_mirrors>},
    {"GPUSLEEP_KEEP_MIRRORS", "1", nullptr,
     "Keep mirrors pinned after wake, so every later sleep pins nothing. `0`: free them after "
     "each wake (host memory is held only while asleep; each sleep pins again).",
     apply_bool<&Options::keep_mirrors>},
    {"GPUSLEEP_HOST_BUDGET", "50%", nullptr,
     "The pinned host memory that all gpusleep processes of the user on the node may hold "
     "together: a size (`64G`, `0`) or a percentage of the memory available at start "
     "(`MemAvailable`, less where the process's cgroup allows less: v2 "
     "`memory.max`/`memory.current`, else v1). The first process sets the node's budget in the "
     "ledger `host-budget` of the runtime directory; later processes take it, unless they set the "
     "variable themselves, which replaces it. Each process's pinned bytes are entered there under "
     "`flock`; entries of processes that died (pid and start time checked) are dropped at the next "
     "update. Background preparation stops at the budget; a sleep past it goes on in pageable "
     "memory, then on disk (docs/architecture.md, host memory tiers).",
     [](const OptionSpec&, Options& o, std::string_view v, std::string* e) {
       if (parse_budget(v, &o.host_budget)) return true;
       *e = "expected a size (64G, 0) or a percentage from 0% to 100%";
       return false;
     }},
    {"GPUSLEEP_PAGEABLE", "1", nullptr,
     "Past the budget, a sleep copies `offload` regions into pageable host memory, through a ring "
     "of pinned staging buffers, while the host keeps 4 GiB available (and the cgroup 1 GiB). "
     "Pageable copies are freed at wake. `0`: never; past the budget, spill or fail.",
     apply_bool<&Options::pageable>},
    {"GPUSLEEP_SPILL_DIR", nullptr, "(none)",
     "A directory on a local disk for the disk tier and for tags with the `spill` policy. Refused "
     "(with a warning at start, and the reason in a sleep's error) when it is in memory (tmpfs, "
     "ramfs), is a link, is owned by another user than this one or root, or is writable by group "
     "or others without the sticky bit. Files in it have no name (`O_TMPFILE`, else unlinked when "
     "opened), so nothing is left behind by a process that dies; their blocks are allocated "
     "before anything is released, so a full disk fails the sleep whole.",
     [](const OptionSpec&, Options& o, std::string_view v, std::string* e) {
       if (!v.empty() && v[0] != '/') {
         *e = "expected an absolute path";
         return false;
       }
       o.spill_dir = std::string(v);
       return true;
     }},
    {"GPUSLEEP_PREP_PRIORITY", "idle", nullptr,
     "The scheduling of the helpers that pin mirrors in the background: `idle` (`SCHED_IDLE`: "
     "they run only on CPUs nothing else wants), `nice` (nice 19) or `normal`. The other helpers "
     "take only what a sleep waits for, at normal priority.",
     [](const OptionSpec&, Options& o, std::string_view v, std::string* e) {
       using P = PrepPacing::Priority;
       if (v == "idle" || v == "nice" || v == "normal") {
         o.prep_priority = v == "idle" ? P::kIdle : v == "nice" ? P::kNice : P::kNormal;
         return true;
       }
       *e = "expected idle, nice or normal";
       return false;
     }},
    {"GPUSLEEP_PREP_RATE", "2G", nullptr,
     "Bytes a second that background preparation pins at most, all helpers together; `0`: no "
     "bound. A sleep waiting on a mirror is not bound by it.",
     [](const OptionSpec&, Options& o, std::string_view v, std::string* e) {
       if (parse_size(v, &o.prep_rate)) return true;
       *e = "expected a size (bytes a second)";
       return false;
     }},
    {"GPUSLEEP_PREP_SETTLE_MS",
     "1000",
     nullptr,
     "Background preparation starts once no allocation of an `offload` region came for this "
     "many milliseconds ({min} to {max}), so a program that is still loading keeps the host to "
     "itself, and short-lived allocations are never pinned.",
     apply_int<&Options::prep_settle_ms, kMilliseconds>,
     {0, 3600000}},
    {"GPUSLEEP_COPY_STREAMS",
     "4",
     nullptr,
     "Copy streams per device, {min}–{max}.",
     apply_int<&Options::copy_streams, kInteger>,
     {1, 16}},
    {"GPUSLEEP_COPY_CHUNK",
     "64M",
     nullptr,
     "Bytes per copy call: a power of two from `{min}` to `{max}`.",
     apply_size<&Options::copy_chunk, kPowerOfTwo, true>,
     {2ll << 20, 256ll << 20, true}},
    {"GPUSLEEP_PREP_THREADS",
     "0",
     nullptr,
     "Threads that prepare mirrors while a sleep waits on them, up to {max}; `0` picks half the "
     "CPUs, from 2 to 16.",
     apply_int<&Options::prep_threads, kInteger>,
     {0, 64}},
    {"GPUSLEEP_MAX_MESSAGE",
     "64K",
     nullptr,
     "The longest control request accepted, `{min}` to `{max}`. A longer one is answered "
     "`message_too_large` and its connection closed.",
     apply_size<&Options::max_message, kSize>,
     {1ll << 10, 16ll << 20, true}},
    {"GPUSLEEP_DRIVER_LIBRARY", "libcuda.so.1", nullptr, "The CUDA driver library to load.",
     [](const OptionSpec&, Options& o, std::string_view v, std::string* e) {
       if (v.empty()) {
         *e = "expected a library name or path";
         return false;
       }
       o.driver_library = std::string(v);
       return true;
     }},
};

}  // namespace

Options::Options() {
  // The defaults are the table's: each row parses its own default_value. Fields of rows without
  // one are empty.
  for (const OptionSpec& spec : kOptions) {
    std::string error;
    if (spec.default_value != nullptr) spec.apply(spec, *this, spec.default_value, &error);
  }
}

std::span<const OptionSpec> option_table() {
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
      if (!spec.apply(spec, options, value, &error)) {
        problems->push_back(std::string(name) + "='" + std::string(value) + "' ignored: " + error);
      }
    }
    if (!known) problems->push_back("unknown option " + std::string(name) + " ignored");
  }
  return options;
}

}  // namespace gpusleep

// `gpusleep doctor`: finds the large device memory a process left in the `default` tag, groups it
// by the call site that made it, guesses each site's tag from its module and function names, and
// writes the rules file that would tag it.
#pragma once

#include <cstdint>
#include <string>

#include "protocol/protocol.h"

namespace gpusleep::cli {

struct DoctorOptions {
  std::uint64_t min_bytes = 64ull << 20;  // call sites holding less are counted, not listed
};

struct DoctorReport {
  std::string text;      // the report, for people; ends with a newline
  protocol::Json rules;  // {"version": 1, "rules": [...]}: one rule per call site with a guess
  std::uint64_t default_bytes = 0;    // bytes in `default` not tagged by any rule
  std::uint64_t unguessed_bytes = 0;  // of those, in listed call sites without a guess
};

// `regions` is the result of a `regions` request with stacks (each region's `python_stack`,
// innermost first); `status` the result of a `status` request. Regions without Python frames are
// grouped by their native call site. A site is the innermost frame, outside PyTorch's and the
// standard library's own modules, whose module or function name says what it allocates:
// graph/capture -> cuda_graph, cache/kv -> kv_cache, load/weight/param -> weights; when no frame
// says, the innermost frame outside those modules, with no guess. Never throws on missing or
// mistyped fields: they count as absent.
DoctorReport doctor(int pid, const protocol::Json& regions, const protocol::Json& status,
                    const DoctorOptions& options = {});

}  // namespace gpusleep::cli

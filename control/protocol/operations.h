// The operations of the control protocol: the one list the server dispatches on and clients
// offer (docs/protocol.md describes each).
#pragma once

#include <cstddef>
#include <string_view>

namespace gpusleep::protocol {

enum class Op { kStatus, kRegions, kSleep, kWake, kTag, kPolicy, kRules, kRetag };

struct OperationSpec {
  Op op;
  std::string_view name;     // the request's "op"
  bool read_only;            // true: it never changes the process's state
  std::string_view summary;  // one line, for help texts
};

inline constexpr OperationSpec kOperations[] = {
    {Op::kStatus, "status", true, "tags, devices and memory the library holds"},
    {Op::kRegions, "regions", true, "the regions, or their call sites grouped"},
    {Op::kSleep, "sleep", false, "release the memory of tags (offload or discard their contents)"},
    {Op::kWake, "wake", false, "map the memory of tags again and restore their contents"},
    {Op::kTag, "tag", false, "set, clear or show the phase tag of new allocations"},
    {Op::kPolicy, "policy", false, "set or show the tags' sleep policies"},
    {Op::kRules, "rules", false, "show, set, reload or clear the tagging rules"},
    {Op::kRetag, "retag", false, "give regions picked by id, range or call site another tag"},
};
inline constexpr std::size_t kOperationCount = sizeof(kOperations) / sizeof(kOperations[0]);

// The operation named `name`; null when none is.
constexpr const OperationSpec* find_operation(std::string_view name) {
  for (const OperationSpec& o : kOperations) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

// Each row sits at its enumerator's index.
constexpr bool operations_in_order() {
  for (std::size_t i = 0; i < kOperationCount; ++i) {
    if (static_cast<std::size_t>(kOperations[i].op) != i) return false;
  }
  return true;
}
static_assert(operations_in_order());

}  // namespace gpusleep::protocol

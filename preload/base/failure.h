// Why a request failed: one name per kind, the rule its caller follows, and the code the control
// protocol sends for it (docs/protocol.md). The one table of failure kinds.
#pragma once

#include <cstddef>
#include <string_view>

namespace gpusleep {

enum class Failure {
  kBadRequest,          // not a JSON object or a bad envelope: fix the client
  kUnsupportedVersion,  // another protocol version: use a client of the library's version
  kUnknownOp,           // no such operation: use one the reply lists
  kInvalidArgument,     // a field of the wrong type or value: fix the request, nothing changed
  kUnknownTag,          // no region ever had the tag: use one the message lists, nothing changed
  kInvalidRules,        // a rule set that does not parse: fix it; the rules in force stay
  kOutOfMemory,         // wake lacked device memory: nothing woke; retry once memory is free
  kHostOutOfMemory,     // sleep lacked host memory for mirrors: free some, or sleep with discard
  kGpuBusy,             // a thread stayed inside a GPU call: nothing slept; retry, or no gate
  kDriverError,         // the driver failed: regions stay as they were; the message says why
  kMessageTooLarge,     // the request line is too long: send a shorter one on a new connection
  kPermissionDenied,    // the peer is another user: connect as the process's user (or root)
  kBusy,                // too many connections: retry later
  kUnavailable,         // the library manages nothing in this process: nothing to ask it
  kInternal,            // a bug in the library; the process goes on: report it
};

struct FailureKind {
  Failure failure;
  std::string_view code;  // its name on the wire
  std::string_view rule;  // what the caller does about it
};

inline constexpr FailureKind kFailureKinds[] = {
    {Failure::kBadRequest, "bad_request", "fix the client: the line is not a request"},
    {Failure::kUnsupportedVersion, "unsupported_version",
     "use a client that speaks the library's protocol version"},
    {Failure::kUnknownOp, "unknown_op", "use one of the operations the message lists"},
    {Failure::kInvalidArgument, "invalid_argument", "fix the request; nothing changed"},
    {Failure::kUnknownTag, "unknown_tag", "use one of the tags the message lists; nothing changed"},
    {Failure::kInvalidRules, "invalid_rules", "fix the rule set; the rules in force are unchanged"},
    {Failure::kOutOfMemory, "out_of_memory",
     "nothing woke: retry once the device has the memory the error names"},
    {Failure::kHostOutOfMemory, "host_out_of_memory",
     "regions that could not be copied stay awake: free host memory or sleep with discard"},
    {Failure::kGpuBusy, "gpu_busy",
     "nothing slept: retry when the program's long GPU call is done, or sleep without the gate"},
    {Failure::kDriverError, "driver_error",
     "the regions named stay as they were: read the driver's error, then retry"},
    {Failure::kMessageTooLarge, "message_too_large",
     "the connection is closed: send a shorter request on a new one"},
    {Failure::kPermissionDenied, "permission_denied", "connect as the process's user or root"},
    {Failure::kBusy, "busy", "too many connections: retry later"},
    {Failure::kUnavailable, "unavailable", "the library manages nothing in this process"},
    {Failure::kInternal, "internal", "a bug in the library: report it; the process goes on"},
};
inline constexpr std::size_t kFailureCount = sizeof(kFailureKinds) / sizeof(kFailureKinds[0]);

// The row of `failure` in kFailureKinds.
constexpr const FailureKind& failure_kind(Failure failure) {
  return kFailureKinds[static_cast<std::size_t>(failure)];
}
// Its code on the wire.
constexpr std::string_view failure_code(Failure failure) {
  return failure_kind(failure).code;
}
// The failure whose code is `code`; false when none is.
constexpr bool parse_failure(std::string_view code, Failure* out) {
  for (const FailureKind& k : kFailureKinds) {
    if (k.code == code) {
      *out = k.failure;
      return true;
    }
  }
  return false;
}

// Each row sits at its enumerator's index, so failure_kind() is a lookup.
constexpr bool failure_table_in_order() {
  for (std::size_t i = 0; i < kFailureCount; ++i) {
    if (static_cast<std::size_t>(kFailureKinds[i].failure) != i) return false;
  }
  return true;
}
static_assert(failure_table_in_order());
static_assert(kFailureCount == static_cast<std::size_t>(Failure::kInternal) + 1);

}  // namespace gpusleep

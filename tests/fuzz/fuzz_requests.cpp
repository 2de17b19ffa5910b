// libFuzzer target: the input's bytes are choices in a grammar of requests (every op, its known
// fields and some unknown ones, values of every JSON type, patterns, nesting, repeated keys), so
// the handlers are reached with well-formed requests far more often than by mutating bytes. Each
// generated line goes through the same handler and reply check as fuzz_control.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_world.h"

namespace {

const char* const kOps[] = {"status", "regions", "sleep", "wake", "tag",
                            "policy", "rules",   "retag", "nope"};
const char* const kFields[] = {"tags",      "policy",      "gate",   "stacks", "group",  "depth",
                               "tag",       "clear",       "action", "rules",  "ids",    "range",
                               "call_site", "start",       "end",    "match",  "native", "python",
                               "module",    "qualname",    "file",   "phase",  "size",   "min",
                               "max",       "passthrough", "name",   "id",     "v",      "op"};
const char* const kStrings[] = {"weights", "kv_cache",    "default", "offload", "discard",
                                "set",     "show",        "clear",   "reload",  "^(.|.|.|.)*!",
                                "(a*)*b",  "^torch\\\\.", "[a-",     "(?=x)",   "\\\\1",
                                "0x1000",  "1G",          "",        "x{99}",   "a{2,1}"};

std::string value(FuzzedDataProvider& in, int depth);

std::string key(FuzzedDataProvider& in) {
  if (in.ConsumeIntegralInRange(0, 9) == 0) return in.ConsumeRandomLengthString(12);
  return in.PickValueInArray(kFields);
}

std::string quoted(const std::string& s) {
  return gpusleep::protocol::Json(s).dump(-1, ' ', false,
                                          gpusleep::protocol::Json::error_handler_t::replace);
}

std::string object(FuzzedDataProvider& in, int depth) {
  std::string out = "{";
  const int n = in.ConsumeIntegralInRange(0, 4);
  for (int i = 0; i < n; ++i)
    out += (i ? "," : "") + quoted(key(in)) + ":" + value(in, depth + 1);
  return out + "}";
}

std::string value(FuzzedDataProvider& in, int depth) {
  switch (in.ConsumeIntegralInRange(0, depth > 6 ? 4 : 7)) {
    case 0:
      return "null";
    case 1:
      return in.ConsumeBool() ? "true" : "false";
    case 2:
      return std::to_string(in.ConsumeIntegralInRange<std::int64_t>(-2, 1 << 20));
    case 3:
      return quoted(in.PickValueInArray(kStrings));
    case 4:
      return quoted(in.ConsumeRandomLengthString(40));
    case 5: {
      std::string out = "[";
      const int n = in.ConsumeIntegralInRange(0, 4);
      for (int i = 0; i < n; ++i)
        out += (i ? "," : "") + value(in, depth + 1);
      return out + "]";
    }
    case 6:
      return object(in, depth);
    default: {  // deep nesting, around the bound
      const int n = in.ConsumeIntegralInRange(20, 40);
      return std::string(static_cast<std::size_t>(n), '[') +
             std::string(static_cast<std::size_t>(n), ']');
    }
  }
}

std::string request(FuzzedDataProvider& in) {
  std::string out = "{\"v\":1,\"op\":" + quoted(in.PickValueInArray(kOps));
  if (in.ConsumeIntegralInRange(0, 3) == 0) out += ",\"id\":" + value(in, 5);
  const int n = in.ConsumeIntegralInRange(0, 4);
  for (int i = 0; i < n; ++i)
    out += "," + quoted(key(in)) + ":" + value(in, 1);
  return out + "}";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  fuzz::world();
  for (int i = 0; i < 8 && in.remaining_bytes() > 0; ++i)
    fuzz::handle_and_check(request(in));
  return 0;
}

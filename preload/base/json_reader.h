// Reading JSON that someone else wrote (requests, rule sets): strict, with its nesting bounded,
// duplicate keys refused and NUL bytes refused, so nothing read later recurses without bound
// or sees a different document than the sender meant.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace gpusleep {

inline constexpr std::size_t kMaxJsonDepth = 32;  // arrays and objects inside one another

// Parses `text` as one JSON document. Returns false with the reason in *error when it is not
// valid JSON, holds a NUL byte, nests deeper than `max_depth`, or repeats a key in one object.
// Never throws (short of running out of memory); uses no recursion.
bool parse_json(std::string_view text, nlohmann::json* out, std::string* error,
                std::size_t max_depth = kMaxJsonDepth);

}  // namespace gpusleep

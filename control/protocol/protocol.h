// The control protocol shared by the server inside the library and every client: versioned JSON
// messages, one per line, with a size bound. docs/protocol.md describes it for users.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace gpusleep::protocol {

using Json = nlohmann::json;

inline constexpr int kVersion = 1;
inline constexpr std::size_t kDefaultMaxRequest = std::size_t{64} << 10;
inline constexpr std::size_t kMaxReply = std::size_t{64} << 20;

// Error codes.
inline constexpr const char* kBadRequest = "bad_request";  // not a JSON object, bad envelope
inline constexpr const char* kUnsupportedVersion = "unsupported_version";
inline constexpr const char* kUnknownOp = "unknown_op";
inline constexpr const char* kInvalidArgument =
    "invalid_argument";  // a field of the wrong type/value
inline constexpr const char* kUnknownTag = "unknown_tag";
inline constexpr const char* kInvalidRules = "invalid_rules";  // a rule set that does not parse
inline constexpr const char* kOutOfMemory = "out_of_memory";   // device memory (wake)
inline constexpr const char* kHostOutOfMemory = "host_out_of_memory";  // host memory (sleep)
inline constexpr const char* kDriverError = "driver_error";
inline constexpr const char* kMessageTooLarge = "message_too_large";
inline constexpr const char* kPermissionDenied = "permission_denied";
inline constexpr const char* kBusy = "busy";                // too many connections
inline constexpr const char* kUnavailable = "unavailable";  // no driver in the process
inline constexpr const char* kInternal = "internal";

struct Request {
  Json id;  // echoed in the reply; null when absent
  std::string op;
  Json body;  // the whole request object
};

// Parses one request line and checks its envelope: a JSON object with "v" equal to kVersion, a
// string "op", and an optional "id" (string, number or null). On failure returns false and sets
// *error to the complete reply to send.
bool parse_request(std::string_view line, Request* out, Json* error);

// Checks that `body` has no fields beyond the envelope's and `allowed`. On failure returns false
// and sets *error to a message naming the field.
bool check_fields(const Json& body, const std::vector<std::string_view>& allowed,
                  std::string* error);

// Optional fields. Each returns false with a message naming the field when it is present with the
// wrong type; absent (or null) leaves *out empty.
bool get_string(const Json& body, const char* field, std::optional<std::string>* out,
                std::string* error);
bool get_string_list(const Json& body, const char* field,
                     std::optional<std::vector<std::string>>* out, std::string* error);
bool get_bool(const Json& body, const char* field, std::optional<bool>* out, std::string* error);

Json make_request(std::string_view op, Json fields = Json::object(), Json id = nullptr);
Json ok_reply(const Json& id, Json result);
Json error_reply(const Json& id, std::string_view code, std::string_view message,
                 Json details = Json::object());

// One line of compact JSON ending in '\n'. Invalid UTF-8 in strings is replaced, never thrown.
std::string encode(const Json& message);

// Parses a reply line. Returns false with a message when it is not a reply of this protocol.
bool parse_reply(std::string_view line, Json* reply, std::string* error);

}  // namespace gpusleep::protocol

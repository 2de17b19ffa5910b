// The control protocol shared by the server inside the library and every client: versioned JSON
// messages, one per line, with a size bound. docs/protocol.md describes it for users.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/failure.h"

namespace gpusleep::protocol {

using Json = nlohmann::json;

inline constexpr int kVersion = 1;
// The longest request line a server accepts (a longer one gets message_too_large), and the
// longest reply line a client reads.
inline constexpr std::size_t kMaxRequest = std::size_t{64} << 10;
inline constexpr std::size_t kMaxReply = std::size_t{64} << 20;

// Error replies carry a Failure's code (base/failure.h: each kind and the rule for its caller).
using gpusleep::Failure;
using gpusleep::failure_code;

struct Request {
  Json id;  // echoed in the reply; null when absent
  std::string op;
  Json body;  // the whole request object
};

// Parses one request line and checks its envelope: a JSON object with "v" equal to kVersion, a
// string "op", and an optional "id" (string, number or null). The line is read strictly
// (base/json_reader.h): nesting deeper than kMaxJsonDepth, a key twice in one object, a NUL byte
// and an empty line are bad requests. On failure returns false and sets *error to the complete
// reply to send.
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
Json error_reply(const Json& id, Failure code, std::string_view message,
                 Json details = Json::object());

// One line of compact JSON ending in '\n'. Invalid UTF-8 in strings is replaced, never thrown.
std::string encode(const Json& message);

// Parses a reply line. Returns false with a message when it is not a reply of this protocol.
bool parse_reply(std::string_view line, Json* reply, std::string* error);

}  // namespace gpusleep::protocol

// Protocol parsing and encoding. nlohmann::json is used only in its non-throwing forms here, and
// every caller inside the library also catches, so a request can never throw into the host.
#include "protocol/protocol.h"

#include "base/json_reader.h"

namespace gpusleep::protocol {
namespace {
std::string clip(std::string_view s, std::size_t n = 64) {
  return std::string(s.substr(0, n)) + (s.size() > n ? "..." : "");
}
}  // namespace

bool parse_request(std::string_view line, Request* out, Json* error) {
  Json body;
  std::string why;
  if (line.find_first_not_of(" \t\r") == std::string_view::npos) {
    *error =
        error_reply(nullptr, Failure::kBadRequest, "an empty line; a request is a JSON object");
    return false;
  }
  if (!parse_json(line, &body, &why)) {
    *error = error_reply(nullptr, Failure::kBadRequest, "not a valid request: " + clip(why, 200));
    return false;
  }
  if (!body.is_object()) {
    *error = error_reply(nullptr, Failure::kBadRequest, "a request is a JSON object");
    return false;
  }
  Json id = nullptr;
  if (auto it = body.find("id"); it != body.end()) {
    if (!it->is_null() && !it->is_string() && !it->is_number()) {
      *error = error_reply(nullptr, Failure::kBadRequest,
                           "field 'id': expected a string, number or null");
      return false;
    }
    if (it->is_string() && it->get_ref<const std::string&>().size() > 256) {
      *error = error_reply(nullptr, Failure::kBadRequest, "field 'id': longer than 256 characters");
      return false;
    }
    id = *it;
  }
  auto v = body.find("v");
  if (v == body.end()) {
    *error = error_reply(id, Failure::kBadRequest, "field 'v' (protocol version) is missing");
    return false;
  }
  if (!v->is_number_integer() || v->get<long long>() != kVersion) {
    // Only a number is shown: serializing an arbitrary value here would echo what the sender
    // chose, at the size the sender chose.
    const std::string shown = v->is_number() ? v->dump() : std::string("of type ") + v->type_name();
    *error = error_reply(id, Failure::kUnsupportedVersion,
                         "protocol version " + clip(shown) + " is not supported (this is " +
                             std::to_string(kVersion) + ")",
                         Json{{"supported", kVersion}});
    return false;
  }
  auto op = body.find("op");
  if (op == body.end() || !op->is_string()) {
    *error = error_reply(id, Failure::kBadRequest, "field 'op': expected a string");
    return false;
  }
  out->id = std::move(id);
  out->op = op->get<std::string>();
  out->body = std::move(body);
  return true;
}

bool check_fields(const Json& body, const std::vector<std::string_view>& allowed,
                  std::string* error) {
  for (const auto& [key, value] : body.items()) {
    if (key == "v" || key == "id" || key == "op") continue;
    bool ok = false;
    for (std::string_view a : allowed)
      ok = ok || key == a;
    if (!ok) {
      *error = "unknown field '" + clip(key) + "'";
      return false;
    }
  }
  return true;
}

bool get_string(const Json& body, const char* field, std::optional<std::string>* out,
                std::string* error) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return true;
  if (!it->is_string()) {
    *error = std::string("field '") + field + "': expected a string";
    return false;
  }
  *out = it->get<std::string>();
  return true;
}

bool get_bool(const Json& body, const char* field, std::optional<bool>* out, std::string* error) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return true;
  if (!it->is_boolean()) {
    *error = std::string("field '") + field + "': expected true or false";
    return false;
  }
  *out = it->get<bool>();
  return true;
}

bool get_string_list(const Json& body, const char* field,
                     std::optional<std::vector<std::string>>* out, std::string* error) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return true;
  if (!it->is_array()) {
    *error = std::string("field '") + field + "': expected an array of strings";
    return false;
  }
  std::vector<std::string> list;
  for (const Json& item : *it) {
    if (!item.is_string()) {
      *error = std::string("field '") + field + "': expected an array of strings";
      return false;
    }
    list.push_back(item.get<std::string>());
  }
  *out = std::move(list);
  return true;
}

Json make_request(std::string_view op, Json fields, Json id) {
  Json request = fields.is_object() ? std::move(fields) : Json::object();
  request["v"] = kVersion;
  request["op"] = std::string(op);
  if (!id.is_null()) request["id"] = std::move(id);
  return request;
}

Json ok_reply(const Json& id, Json result) {
  return Json{{"v", kVersion}, {"id", id}, {"ok", true}, {"result", std::move(result)}};
}

Json error_reply(const Json& id, Failure code, std::string_view message, Json details) {
  Json error = details.is_object() ? std::move(details) : Json::object();
  error["code"] = std::string(failure_code(code));
  error["message"] = std::string(message);
  return Json{{"v", kVersion}, {"id", id}, {"ok", false}, {"error", std::move(error)}};
}

std::string encode(const Json& message) {
  std::string line = message.dump(-1, ' ', false, Json::error_handler_t::replace);
  line.push_back('\n');
  return line;
}

bool parse_reply(std::string_view line, Json* reply, std::string* error) {
  Json j = Json::parse(line.begin(), line.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    *error = "the reply is not a JSON object";
    return false;
  }
  auto ok = j.find("ok");
  if (ok == j.end() || !ok->is_boolean()) {
    *error = "the reply has no 'ok' field";
    return false;
  }
  if (ok->get<bool>()) {
    if (!j.contains("result")) {
      *error = "the reply has no 'result'";
      return false;
    }
  } else {
    auto e = j.find("error");
    if (e == j.end() || !e->is_object() || !e->contains("code") || !e->contains("message")) {
      *error = "the error reply has no code and message";
      return false;
    }
  }
  *reply = std::move(j);
  return true;
}

}  // namespace gpusleep::protocol

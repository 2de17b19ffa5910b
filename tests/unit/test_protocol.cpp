// The protocol module: envelopes, field checks, encoding, malformed input.
#include <catch2/catch.hpp>

#include "base/json_reader.h"
#include "protocol/protocol.h"

using namespace gpusleep::protocol;

namespace {
std::string parse_error_code(std::string_view line) {
  Request r;
  Json error;
  if (parse_request(line, &r, &error)) return "";
  return error["error"]["code"].get<std::string>();
}
}  // namespace

TEST_CASE("a well-formed request parses with its id and op", "[protocol]") {
  Request r;
  Json error;
  REQUIRE(parse_request(R"({"v":1,"id":7,"op":"sleep","tags":["weights"]})", &r, &error));
  CHECK(r.op == "sleep");
  CHECK(r.id == 7);
  CHECK(r.body["tags"][0] == "weights");
  REQUIRE(parse_request(R"({"v":1,"op":"status"})", &r, &error));
  CHECK(r.id.is_null());
}

TEST_CASE("malformed requests get the matching error code", "[protocol]") {
  CHECK(parse_error_code("not json") == failure_code(Failure::kBadRequest));
  CHECK(parse_error_code("") == failure_code(Failure::kBadRequest));
  CHECK(parse_error_code("[1,2]") == failure_code(Failure::kBadRequest));
  CHECK(parse_error_code(R"({"op":"status"})") == failure_code(Failure::kBadRequest));
  CHECK(parse_error_code(R"({"v":2,"op":"status"})") == failure_code(Failure::kUnsupportedVersion));
  CHECK(parse_error_code(R"({"v":"1","op":"status"})") ==
        failure_code(Failure::kUnsupportedVersion));
  CHECK(parse_error_code(R"({"v":1e300,"op":"status"})") ==
        failure_code(Failure::kUnsupportedVersion));
  CHECK(parse_error_code(R"({"v":1})") == failure_code(Failure::kBadRequest));
  CHECK(parse_error_code(R"({"v":1,"op":42})") == failure_code(Failure::kBadRequest));
  CHECK(parse_error_code(R"({"v":1,"op":"status","id":{"a":1}})") ==
        failure_code(Failure::kBadRequest));
  CHECK(parse_error_code("{\"v\":1,\"op\":\"st\xff\xfe\"}") ==
        failure_code(Failure::kBadRequest));  // invalid UTF-8
  CHECK(parse_error_code(R"({"v":1,"op":"status")") ==
        failure_code(Failure::kBadRequest));  // truncated
  CHECK(parse_error_code(std::string(10000, '[')) == failure_code(Failure::kBadRequest));
}

TEST_CASE("a request is read strictly: one key once, no NUL, bounded nesting, not empty",
          "[protocol]") {
  Request r;
  Json error;
  REQUIRE_FALSE(parse_request(R"({"op":"status","v":1,"op":"sleep"})", &r, &error));
  CHECK(error["error"]["code"] == failure_code(Failure::kBadRequest));
  CHECK(error["error"]["message"].get<std::string>().find("\"op\" appears twice") !=
        std::string::npos);
  CHECK(parse_error_code(R"({"v":1,"op":"sleep","tags":[{"a":1,"a":2}]})") ==
        failure_code(Failure::kBadRequest));
  const std::string with_nul("{\"v\":1,\"op\":\"status\"}\0{\"v\":1,\"op\":\"sleep\"}", 42);
  REQUIRE_FALSE(parse_request(with_nul, &r, &error));
  CHECK(error["error"]["message"].get<std::string>().find("NUL") != std::string::npos);
  CHECK(parse_error_code(std::string("{\"v\":1,\"op\":\"sta\0tus\"}", 22)) ==
        failure_code(Failure::kBadRequest));
  REQUIRE_FALSE(parse_request("", &r, &error));
  CHECK(error["error"]["message"].get<std::string>().find("empty line") != std::string::npos);
  CHECK(parse_error_code("   ") == failure_code(Failure::kBadRequest));
  // Nesting: up to the bound is read, beyond it refused, far beyond it refused without recursion.
  auto nested = [](std::size_t depth) {
    return R"({"v":1,"op":"status","x":)" + std::string(depth - 1, '[') +
           std::string(depth - 1, ']') + "}";
  };
  CHECK(parse_error_code(nested(gpusleep::kMaxJsonDepth)) == "");
  CHECK(parse_error_code(nested(gpusleep::kMaxJsonDepth + 1)) ==
        failure_code(Failure::kBadRequest));
  CHECK(parse_error_code(nested(1000000)) == failure_code(Failure::kBadRequest));
  CHECK(parse_error_code(R"({"v":)" + std::string(20, '[') + "1" + std::string(20, ']') +
                         R"(,"op":"x"})") == failure_code(Failure::kUnsupportedVersion));
}

TEST_CASE("a version error still echoes the request id", "[protocol]") {
  Request r;
  Json error;
  REQUIRE_FALSE(parse_request(R"({"v":9,"id":"abc","op":"status"})", &r, &error));
  CHECK(error["id"] == "abc");
  CHECK(error["ok"] == false);
  CHECK(error["error"]["supported"] == kVersion);
}

TEST_CASE("fields are checked by name and type", "[protocol]") {
  Json body = Json::parse(R"({"v":1,"op":"sleep","tags":["a",3],"policy":5,"extra":1})");
  std::string error;
  CHECK_FALSE(check_fields(body, {"tags", "policy"}, &error));
  CHECK(error.find("'extra'") != std::string::npos);
  std::optional<std::vector<std::string>> tags;
  CHECK_FALSE(get_string_list(body, "tags", &tags, &error));
  CHECK(error.find("'tags'") != std::string::npos);
  std::optional<std::string> policy;
  CHECK_FALSE(get_string(body, "policy", &policy, &error));
  CHECK(error.find("'policy'") != std::string::npos);
  std::optional<std::string> absent;
  CHECK(get_string(body, "nothing", &absent, &error));
  CHECK_FALSE(absent.has_value());
}

TEST_CASE("encoding gives one line and never throws on invalid UTF-8", "[protocol]") {
  Json j = ok_reply(1, Json{{"name", std::string("bad\xff")}});
  std::string line;
  REQUIRE_NOTHROW(line = encode(j));
  CHECK(line.back() == '\n');
  CHECK(line.find('\n') == line.size() - 1);
  Json back;
  std::string error;
  REQUIRE(parse_reply(line, &back, &error));
  CHECK(back["ok"] == true);
}

TEST_CASE("requests and replies round-trip", "[protocol]") {
  Json req = make_request("wake", Json{{"tags", {"kv_cache"}}}, 12);
  Request r;
  Json error;
  REQUIRE(parse_request(encode(req), &r, &error));
  CHECK(r.op == "wake");
  CHECK(r.id == 12);
  Json reply;
  std::string why;
  REQUIRE(
      parse_reply(encode(error_reply(3, Failure::kOutOfMemory, "no", Json{{"needed_bytes", 5}})),
                  &reply, &why));
  CHECK(reply["error"]["code"] == "out_of_memory");
  CHECK(reply["error"]["needed_bytes"] == 5);
  CHECK_FALSE(parse_reply(R"({"ok":true})", &reply, &why));
  CHECK_FALSE(parse_reply(R"({"ok":false,"error":{}})", &reply, &why));
  CHECK_FALSE(parse_reply("garbage", &reply, &why));
}

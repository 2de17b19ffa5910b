// Request handling inside the library, over an engine on the emulated driver: replies for every
// op and clear errors for bad input, with the host's regions left as they were.
#include <catch2/catch.hpp>

#include "fake_gpu.h"
#include "server/handler.h"

using namespace gpusleep;
using namespace gpusleep::test;
using protocol::Json;

namespace {
Json call(Handler& h, const std::string& line) {
  std::string reply = h.handle_line(line);
  REQUIRE(reply.back() == '\n');
  return Json::parse(reply);
}
}  // namespace

TEST_CASE("status describes the process, tags and devices", "[handler]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  must_allocate(engine, 2 * kMiB);
  Handler h(&engine);
  Json r = call(h, R"({"v":1,"id":1,"op":"status"})");
  REQUIRE(r["ok"] == true);
  CHECK(r["id"] == 1);
  const Json& s = r["result"];
  CHECK(s["process"]["pid"] == static_cast<int>(getpid()));
  CHECK(s["protocol"] == 1);
  CHECK(s["managing"] == true);
  REQUIRE(s["tags"].size() == 1);
  CHECK(s["tags"][0]["tag"] == "default");
  CHECK(s["tags"][0]["state"] == "awake");
  CHECK(s["tags"][0]["resident_bytes"] == 2 * kMiB);
  CHECK(s["tags"][0]["last_sleep_ms"].is_null());
  CHECK(s["totals"]["bytes"] == 2 * kMiB);
  CHECK(s["devices"][0]["total_bytes"] == kDefaultCapacity);
}

TEST_CASE("sleep, wake, regions and tag requests act and report", "[handler]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  Handler h(&engine);
  Json t = call(h, R"({"v":1,"op":"tag","tag":"kv_cache"})");
  REQUIRE(t["ok"] == true);
  CHECK(t["result"]["phase_tag"] == "kv_cache");
  CHECK(t["result"]["previous"].is_null());
  DevicePtr kv = must_allocate(engine, 4 * kMiB);
  CHECK(call(h, R"({"v":1,"op":"tag","clear":true})")["result"]["effective_tag"] == "default");

  Json regions = call(h, R"({"v":1,"op":"regions","tags":["kv_cache"]})");
  REQUIRE(regions["result"]["regions"].size() == 1);
  const Json& reg = regions["result"]["regions"][0];
  CHECK(reg["tag"] == "kv_cache");
  CHECK(reg["policy"] == "discard");
  CHECK(reg["mapped_bytes"] == 4 * kMiB);
  char addr[32];
  std::snprintf(addr, sizeof addr, "0x%llx", static_cast<unsigned long long>(kv));
  CHECK(reg["address"] == addr);

  Json s = call(h, R"({"v":1,"op":"sleep","tags":["kv_cache"]})");
  REQUIRE(s["ok"] == true);
  CHECK(s["result"]["regions"] == 1);
  CHECK(s["result"]["discarded_bytes"] == 4 * kMiB);
  CHECK(s["result"]["tags"][0]["policy"] == "discard");
  CHECK(s["result"]["copy_gbps"].is_null());
  Json again = call(h, R"({"v":1,"op":"sleep","tags":["kv_cache"]})");
  CHECK(again["result"]["noop"] == Json::array({"kv_cache"}));
  Json w = call(h, R"({"v":1,"op":"wake"})");
  REQUIRE(w["ok"] == true);
  CHECK(w["result"]["bytes"] == 4 * kMiB);
  Json p = call(h, R"({"v":1,"op":"policy","tag":"kv_cache","policy":"offload"})");
  CHECK(p["result"]["policies"]["kv_cache"] == "offload");
}

TEST_CASE("bad requests get structured errors and change nothing", "[handler]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  DevicePtr a = must_allocate(engine, 2 * kMiB);
  fill(a, 2 * kMiB, 6);
  Handler h(&engine);
  auto code = [&](const std::string& line) {
    Json r = call(h, line);
    CHECK(r["ok"] == false);
    CHECK(r["error"]["message"].get<std::string>().size() > 5);
    return r["error"]["code"].get<std::string>();
  };
  CHECK(code("{") == "bad_request");
  CHECK(code(R"({"v":1,"op":"explode"})") == "unknown_op");
  CHECK(code(R"({"v":1,"op":"sleep","tags":"weights"})") == "invalid_argument");
  CHECK(code(R"({"v":1,"op":"sleep","tags":[1e400]})") == "bad_request");
  CHECK(code(R"({"v":1,"op":"sleep","tags":[18446744073709551616]})") == "invalid_argument");
  CHECK(code(R"({"v":1,"op":"sleep","policy":"maybe"})") == "invalid_argument");
  CHECK(code(R"({"v":1,"op":"sleep","tags":["nope"]})") == "unknown_tag");
  CHECK(code(R"({"v":1,"op":"sleep","tagz":["default"]})") == "invalid_argument");
  CHECK(code(R"({"v":1,"op":"wake","tags":["a b"]})") == "invalid_argument");
  CHECK(code(R"({"v":1,"op":"tag","tag":""})") == "invalid_argument");
  CHECK(code(R"({"v":1,"op":"tag","tag":"x","clear":true})") == "invalid_argument");
  CHECK(code(R"({"v":1,"op":"tag","clear":"yes"})") == "invalid_argument");
  CHECK(code(R"({"v":1,"op":"policy","policy":"discard"})") == "invalid_argument");
  CHECK(code(R"({"v":1,"op":"status","verbose":true})") == "invalid_argument");
  CHECK(code("{\"v\":1,\"op\":\"sleep\",\"tags\":[\"\xc3\x28\"]}") == "bad_request");
  CHECK(engine.regions()[0].state == RegionState::kAwake);
  CHECK(holds(a, 2 * kMiB, 6));
}

TEST_CASE("a wake that lacks memory replies out_of_memory with the figures", "[handler]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  must_allocate(engine, 8 * kMiB);
  Handler h(&engine);
  REQUIRE(call(h, R"({"v":1,"op":"sleep"})")["ok"] == true);
  gpu.set_capacity(gpu.used() + 2 * kMiB);
  Json r = call(h, R"({"v":1,"op":"wake"})");
  REQUIRE(r["ok"] == false);
  CHECK(r["error"]["code"] == "out_of_memory");
  CHECK(r["error"]["needed_bytes"] == 8 * kMiB);
  CHECK(r["error"]["free_bytes"] == 2 * kMiB);
  CHECK(r["error"]["device"] == 0);
}

TEST_CASE("without an engine only status answers", "[handler]") {
  Handler h(nullptr);
  Json s = call(h, R"({"v":1,"op":"status"})");
  CHECK(s["ok"] == true);
  CHECK(s["result"]["managing"] == false);
  CHECK(call(h, R"({"v":1,"op":"sleep"})")["error"]["code"] == "unavailable");
}

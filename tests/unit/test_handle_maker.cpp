// HandleMaker: creation ahead of the mapping thread, in order, stopping at the first failure.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>

#include "core/handle_maker.h"

using namespace gpusleep;

namespace {
DrvStatus make_plus_one(std::size_t i, PhysHandle* h) {
  *h = 100 + i;
  return kDrvOk;
}
}  // namespace

TEST_CASE("handles come in order, from the helper thread or inline", "[handle_maker]") {
  for (bool threaded : {true, false}) {
    std::atomic<std::thread::id> creator{};
    HandleMaker maker(20, threaded, [&](std::size_t i, PhysHandle* h) {
      creator = std::this_thread::get_id();
      return make_plus_one(i, h);
    });
    for (std::size_t i = 0; i < 20; ++i) {
      PhysHandle h = 0;
      std::size_t failed = 99;
      REQUIRE(maker.get(i, &h, &failed) == kDrvOk);
      CHECK(h == 100 + i);
      CHECK(failed == 99);
    }
    CHECK((creator.load() == std::this_thread::get_id()) == !threaded);
    maker.stop();
    CHECK(maker.handles().size() == 20);
    CHECK(maker.handles()[19] == 119);
  }
}

TEST_CASE("a failed create stops creation and is reported for every later item", "[handle_maker]") {
  for (bool threaded : {true, false}) {
    std::atomic<int> calls{0};
    HandleMaker maker(10, threaded, [&](std::size_t i, PhysHandle* h) {
      ++calls;
      if (i == 4) return kDrvOutOfMemory;
      return make_plus_one(i, h);
    });
    PhysHandle h = 0;
    std::size_t failed = 0;
    for (std::size_t i = 0; i < 4; ++i)
      REQUIRE(maker.get(i, &h, &failed) == kDrvOk);
    CHECK(maker.get(4, &h, &failed) == kDrvOutOfMemory);
    CHECK(failed == 4);
    CHECK(h == 0);
    CHECK(maker.get(5, &h, &failed) == kDrvOutOfMemory);
    maker.stop();
    CHECK(calls == 5);  // nothing after the failure was tried
    const auto& handles = maker.handles();
    CHECK(handles[3] == 103);
    CHECK(handles[4] == 0);
    CHECK(handles[9] == 0);
  }
}

TEST_CASE("stop ends the helper early and keeps what it made for the caller to release",
          "[handle_maker]") {
  std::atomic<int> calls{0};
  HandleMaker maker(1000, true, [&](std::size_t i, PhysHandle* h) {
    ++calls;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    return make_plus_one(i, h);
  });
  PhysHandle h = 0;
  std::size_t failed = 0;
  REQUIRE(maker.get(2, &h, &failed) == kDrvOk);
  maker.stop();
  const int made = calls.load();
  CHECK(made >= 3);
  CHECK(made < 1000);
  std::size_t nonzero = 0;
  for (PhysHandle x : maker.handles())
    nonzero += x != 0;
  CHECK(nonzero == static_cast<std::size_t>(made));
}

// Retagging regions after allocation (Engine::retag): the regions picked take the tag, later
// sleeps treat them as that tag's, and the tag becomes known.
#include <catch2/catch.hpp>

#include "fake_gpu.h"

using namespace gpusleep;
using namespace gpusleep::test;

TEST_CASE("retagged regions sleep with their new tag and the rest stay awake", "[retag]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  const DevicePtr a = must_allocate(engine, 2 * kMiB);
  const DevicePtr b = must_allocate(engine, 3 * kMiB);
  const DevicePtr c = must_allocate(engine, 2 * kMiB);
  fill(b, 3 * kMiB, 9);
  auto [count, bytes] =
      engine.retag([&](const RegionInfo& r) { return r.va == b || r.va == c; }, "weights");
  CHECK(count == 2);
  CHECK(bytes == 6 * kMiB);  // mapped bytes: 4 MiB and 2 MiB
  const EngineStatus s = engine.status();
  REQUIRE(find_tag(s, "weights") != nullptr);
  CHECK(find_tag(s, "weights")->regions == 2);
  CHECK(find_tag(s, "default")->regions == 1);

  SleepRequest sleep;
  sleep.tags = {"weights"};
  OpResult r = engine.sleep(sleep);
  REQUIRE(r.ok);
  CHECK(r.regions == 2);
  for (const RegionInfo& info : engine.regions())
    CHECK(info.state == (info.va == a ? RegionState::kAwake : RegionState::kAsleep));
  REQUIRE(engine.wake(WakeRequest{{"weights"}}).ok);
  CHECK(holds(b, 3 * kMiB, 9));
}

TEST_CASE("a retag that picks nothing changes nothing and creates no tag", "[retag]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  must_allocate(engine, 2 * kMiB);
  auto [count, bytes] = engine.retag([](const RegionInfo&) { return false; }, "spare");
  CHECK(count == 0);
  CHECK(bytes == 0);
  SleepRequest sleep;
  sleep.tags = {"spare"};
  OpResult r = engine.sleep(sleep);
  CHECK_FALSE(r.ok);  // a mistyped pattern leaves no tag behind to sleep as a no-op
  CHECK(r.error.code == Failure::kUnknownTag);
  CHECK(engine.regions()[0].tag == "default");
}

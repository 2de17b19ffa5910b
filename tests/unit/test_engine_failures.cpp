// Sleep and wake that fail part way, over the emulated driver's injected failures: each leaves
// every region as it was (awake and intact, or asleep with its mirror), releases nothing it
// should not, and says what went wrong.
#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

#include "fake_gpu.h"

using namespace gpusleep;
using namespace gpusleep::test;

TEST_CASE("a wake that cannot get all its memory wakes nothing and says what was missing",
          "[engine]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  DevicePtr a = must_allocate(engine, 8 * kMiB);
  DevicePtr b = must_allocate(engine, 8 * kMiB);
  fill(a, 8 * kMiB, 1);
  fill(b, 8 * kMiB, 2);
  REQUIRE(engine.sleep(SleepRequest{}).ok);
  // A co-located job takes all but 10 MiB: the first region fits, the second does not.
  const std::uint64_t used_asleep = gpu.used();
  gpu.set_capacity(used_asleep + 10 * kMiB);
  OpResult r = engine.wake(WakeRequest{});
  CHECK_FALSE(r.ok);
  CHECK(r.error.code == Failure::kOutOfMemory);
  CHECK(r.error.device == 0);
  CHECK(r.error.needed_bytes == 16 * kMiB);
  CHECK(r.error.free_bytes == 10 * kMiB);
  CHECK(gpu.used() == used_asleep);  // the first region's memory was given back
  for (const RegionInfo& info : engine.regions())
    CHECK(info.state == RegionState::kAsleep);
  // Once the memory is free again, the same wake succeeds with the contents intact.
  gpu.set_capacity(kDefaultCapacity);
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK(holds(a, 8 * kMiB, 1));
  CHECK(holds(b, 8 * kMiB, 2));
}

TEST_CASE("a map failure during wake, after restores were queued, rolls every region back",
          "[engine]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  DevicePtr a = must_allocate(engine, 2 * kMiB);
  DevicePtr b = must_allocate(engine, 2 * kMiB);
  DevicePtr c = must_allocate(engine, 2 * kMiB);
  fill(a, 2 * kMiB, 1);
  fill(b, 2 * kMiB, 2);
  fill(c, 2 * kMiB, 3);
  REQUIRE(engine.sleep(SleepRequest{}).ok);
  const std::uint64_t used_asleep = gpu.used();
  gpu.fail("cuMemMap", 1, 1);  // the second map fails
  OpResult r = engine.wake(WakeRequest{});
  CHECK_FALSE(r.ok);
  CHECK(r.error.code == Failure::kDriverError);
  CHECK(gpu.used() == used_asleep);
  for (const RegionInfo& info : engine.regions())
    CHECK(info.state == RegionState::kAsleep);
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK(holds(a, 2 * kMiB, 1));
  CHECK(holds(b, 2 * kMiB, 2));
  CHECK(holds(c, 2 * kMiB, 3));
}

TEST_CASE("a wake of many regions that runs out of memory part way wakes nothing", "[engine]") {
  // Twelve regions: their memory is created on a helper thread while the first are mapped and
  // restored, so the failure comes after restores were queued.
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  std::vector<DevicePtr> regions;
  for (int i = 0; i < 12; ++i) {
    regions.push_back(must_allocate(engine, 4 * kMiB));
    fill(regions.back(), 4 * kMiB, 100 + i);
  }
  REQUIRE(engine.sleep(SleepRequest{}).ok);
  const std::uint64_t used_asleep = gpu.used();
  gpu.set_capacity(used_asleep + 21 * kMiB);  // five regions fit, the sixth does not
  OpResult r = engine.wake(WakeRequest{});
  CHECK_FALSE(r.ok);
  CHECK(r.error.code == Failure::kOutOfMemory);
  CHECK(r.error.needed_bytes == 48 * kMiB);
  CHECK(r.error.free_bytes == 21 * kMiB);
  CHECK(gpu.used() == used_asleep);
  for (const RegionInfo& info : engine.regions())
    CHECK(info.state == RegionState::kAsleep);

  gpu.set_capacity(kDefaultCapacity);
  gpu.fail("cuMemCreate", 9, 1);  // the tenth create fails
  r = engine.wake(WakeRequest{});
  CHECK(r.error.code == Failure::kDriverError);
  CHECK(r.error.message.find("cannot create device memory") != std::string::npos);
  CHECK(gpu.used() == used_asleep);
  for (const RegionInfo& info : engine.regions())
    CHECK(info.state == RegionState::kAsleep);

  REQUIRE(engine.wake(WakeRequest{}).ok);
  for (int i = 0; i < 12; ++i)
    CHECK(holds(regions[i], 4 * kMiB, 100 + i));
}

TEST_CASE("a restore failure during wake leaves the regions asleep with their mirrors",
          "[engine]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  DevicePtr a = must_allocate(engine, 6 * kMiB);
  fill(a, 6 * kMiB, 4);
  REQUIRE(engine.sleep(SleepRequest{}).ok);
  const std::uint64_t used_asleep = gpu.used();
  gpu.fail("cuMemcpyHtoDAsync_v2", 1, 1);
  OpResult r = engine.wake(WakeRequest{});
  CHECK_FALSE(r.ok);
  CHECK(r.error.code == Failure::kDriverError);
  CHECK(gpu.used() == used_asleep);
  CHECK(engine.regions()[0].state == RegionState::kAsleep);
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK(holds(a, 6 * kMiB, 4));
}

TEST_CASE("a copy failure during sleep leaves every region awake and intact", "[engine]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  DevicePtr a = must_allocate(engine, 4 * kMiB);
  DevicePtr b = must_allocate(engine, 4 * kMiB);
  fill(a, 4 * kMiB, 1);
  fill(b, 4 * kMiB, 2);
  const std::uint64_t used = gpu.used();
  gpu.fail("cuMemcpyDtoHAsync_v2", 2, 1);
  OpResult r = engine.sleep(SleepRequest{});
  CHECK_FALSE(r.ok);
  CHECK(r.error.code == Failure::kDriverError);
  CHECK(gpu.used() == used);
  for (const RegionInfo& info : engine.regions())
    CHECK(info.state == RegionState::kAwake);
  CHECK(holds(a, 4 * kMiB, 1));
  CHECK(holds(b, 4 * kMiB, 2));
  REQUIRE(engine.sleep(SleepRequest{}).ok);
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK(holds(a, 4 * kMiB, 1));
}

TEST_CASE("a copy that cannot be queued releases nothing, discard regions included", "[engine]") {
  FakeGpu gpu;
  Options o = test_options();
  o.default_tag = "weights";
  Engine engine(gpu.driver(), o);
  DevicePtr w = must_allocate(engine, 4 * kMiB);
  engine.set_phase_tag("kv_cache");
  DevicePtr kv = must_allocate(engine, 4 * kMiB);
  fill(w, 4 * kMiB, 1);
  fill(kv, 4 * kMiB, 2);
  const std::uint64_t used = gpu.used();
  gpu.fail("cuMemcpyDtoHAsync_v2", 0, 1);
  OpResult r = engine.sleep(SleepRequest{});
  CHECK_FALSE(r.ok);
  CHECK(r.regions == 0);
  CHECK(gpu.used() == used);
  for (const RegionInfo& info : engine.regions())
    CHECK(info.state == RegionState::kAwake);
  CHECK(holds(w, 4 * kMiB, 1));
  CHECK(holds(kv, 4 * kMiB, 2));
}

TEST_CASE("a copy that fails on the device releases only the regions copied before it",
          "[engine]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  std::vector<DevicePtr> va;
  for (int i = 0; i < 3; ++i)
    va.push_back(must_allocate(engine, 2 * kMiB));
  std::sort(va.begin(), va.end());  // a sleep moves regions in address order
  for (int i = 0; i < 3; ++i)
    fill(va[i], 2 * kMiB, i);
  gpu.fail("cuEventSynchronize", 1, 1);  // the copy of the second region fails as it runs
  OpResult r = engine.sleep(SleepRequest{});
  CHECK_FALSE(r.ok);
  CHECK(r.error.code == Failure::kDriverError);
  CHECK(r.regions == 1);
  for (const RegionInfo& info : engine.regions()) {
    CHECK(info.state == (info.va == va[0] ? RegionState::kAsleep : RegionState::kAwake));
  }
  CHECK(holds(va[1], 2 * kMiB, 1));
  CHECK(holds(va[2], 2 * kMiB, 2));
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK(holds(va[0], 2 * kMiB, 0));
  const FakeCudaStats s = gpu.stats();
  CHECK(s.events_created == s.events_destroyed);
}

TEST_CASE("a device that does not go idle fails the sleep before anything is touched", "[engine]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  DevicePtr a = must_allocate(engine, 2 * kMiB);
  fill(a, 2 * kMiB, 9);
  gpu.fail("cuCtxSynchronize", 0, 1, 700);  // CUDA_ERROR_ILLEGAL_ADDRESS from an earlier kernel
  OpResult r = engine.sleep(SleepRequest{});
  CHECK_FALSE(r.ok);
  CHECK(r.error.code == Failure::kDriverError);
  CHECK(engine.regions()[0].state == RegionState::kAwake);
  CHECK(holds(a, 2 * kMiB, 9));
}

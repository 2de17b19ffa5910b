// The engine under concurrent use: the host's threads allocate and free while a controller
// sleeps and wakes other tags; frees of regions in motion wait; controllers are serialized.
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include "fake_gpu.h"

using namespace gpusleep;
using namespace gpusleep::test;

TEST_CASE("threads allocate, write and free while a controller cycles another tag",
          "[engine][concurrency]") {
  FakeGpu gpu;
  Options o = test_options();
  o.default_tag = "weights";
  Engine engine(gpu.driver(), o);
  const std::uint64_t used0 = gpu.used();
  engine.set_phase_tag("kv");
  std::vector<DevicePtr> kv;
  for (int i = 0; i < 4; ++i) {
    kv.push_back(must_allocate(engine, 4 * kMiB));
    fill(kv.back(), 4 * kMiB, 100 + i);
  }
  engine.set_phase_tag("");
  engine.set_policy("kv", Policy::kOffload);
  gpu.set_copy_delay_us(200);  // widen the windows in which the controller is mid-copy

  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < 4; ++t) {
    workers.emplace_back([&, t] {
      std::uint64_t seed = 1000 * (t + 1);
      while (!stop.load()) {
        DevicePtr va = 0;
        if (engine.allocate(2 * kMiB, 0, 0, &va) != AllocOutcome::kManaged) {
          ++failures;
          continue;
        }
        fill(va, 2 * kMiB, ++seed);
        if (!holds(va, 2 * kMiB, seed)) ++failures;
        if (engine.free(va) != FreeOutcome::kFreed) ++failures;
      }
    });
  }
  for (int cycle = 0; cycle < 20; ++cycle) {
    OpResult s = engine.sleep(SleepRequest{{"kv"}, std::nullopt});
    REQUIRE(s.ok);
    CHECK(s.regions == 4);
    OpResult w = engine.wake(WakeRequest{{"kv"}});
    REQUIRE(w.ok);
    CHECK(w.regions == 4);
    for (int i = 0; i < 4; ++i)
      CHECK(holds(kv[i], 4 * kMiB, 100 + i));
  }
  stop = true;
  for (auto& w : workers)
    w.join();
  CHECK(failures.load() == 0);
  for (DevicePtr va : kv)
    engine.free(va);
  CHECK(gpu.used() == used0);
  CHECK(engine.regions().empty());
}

TEST_CASE("a free of a region being put to sleep waits for the sleep, then frees it",
          "[engine][concurrency]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  const std::uint64_t used0 = gpu.used();
  const FakeCudaStats before = gpu.stats();
  DevicePtr a = must_allocate(engine, 32 * kMiB);
  fill(a, 32 * kMiB, 1);
  gpu.set_copy_delay_us(20000);    // 16 chunks: the sleep takes about 0.3 s
  std::atomic<bool> slept{false};  // Catch's assertions belong to the test's thread
  std::thread controller([&] { slept = engine.sleep(SleepRequest{}).ok; });
  while (engine.regions().empty() || engine.regions()[0].state == RegionState::kAwake) {
    std::this_thread::yield();
  }
  CHECK(engine.free(a) == FreeOutcome::kFreed);
  controller.join();
  CHECK(slept);
  CHECK(engine.regions().empty());
  CHECK(gpu.used() == used0);
  engine.drain_background();  // mirrors are unpinned on a helper thread
  CHECK(gpu.stats().registered_bytes == before.registered_bytes);
}

TEST_CASE("sleeps and wakes from several controllers are serialized and stay coherent",
          "[engine][concurrency]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  DevicePtr a = must_allocate(engine, 8 * kMiB);
  fill(a, 8 * kMiB, 42);
  gpu.set_copy_delay_us(500);
  std::atomic<int> slept{0}, woke{0}, errors{0};
  std::vector<std::thread> controllers;
  for (int t = 0; t < 4; ++t) {
    controllers.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        OpResult r = (i + t) % 2 ? engine.sleep(SleepRequest{}) : engine.wake(WakeRequest{});
        if (!r.ok) ++errors;
        if (r.regions > 0) ++((i + t) % 2 ? slept : woke);
      }
    });
  }
  for (auto& c : controllers)
    c.join();
  CHECK(errors.load() == 0);
  // Every wake that did something followed a sleep that did something.
  CHECK((slept.load() == woke.load() || slept.load() == woke.load() + 1));
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK(holds(a, 8 * kMiB, 42));
}

// The gate (preload/core/gate.h) on real threads: what passes when, draining, the waiting modes,
// and the property it exists for: no call is inside while the gate is closed and drained.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "core/gate.h"
#include "fake_gpu.h"

using namespace gpusleep;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

// The process's gate, open and in `mode`, with no waker; both fence flavours are tested.
Gate& fresh_gate(GateMode mode, bool membarrier) {
  Gate& g = Gate::process();
  g.set_mode(GateMode::kOff);  // opens
  g.set_waker(nullptr);
  g.set_mode(mode);
  g.set_membarrier(membarrier);
  return g;
}

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

}  // namespace

TEST_CASE("a closed gate drains calls in progress and holds new ones until it opens", "[gate]") {
  for (bool membarrier : {true, false}) {
    CAPTURE(membarrier);
    Gate& gate = fresh_gate(GateMode::kWait, membarrier);
    std::atomic<bool> inside{false};
    std::thread busy([&] {
      GatePass pass(gate, "cudaMemcpy");
      inside = true;
      std::this_thread::sleep_for(200ms);
    });
    while (!inside)
      std::this_thread::yield();
    const Clock::time_point t = Clock::now();
    std::string call;
    REQUIRE(gate.close(5000ms, &call));
    CHECK(ms_since(t) >= 100);  // it waited for the call to leave
    busy.join();
    CHECK(gate.closed());

    std::atomic<bool> passed{false};
    std::thread late([&] {
      GatePass pass(gate, "cudaLaunchKernel");
      passed = true;
    });
    std::this_thread::sleep_for(150ms);
    CHECK_FALSE(passed);
    CHECK(gate.stats().waiting == 1);
    gate.open();
    late.join();
    CHECK(passed);
    CHECK(gate.stats().waiting == 0);
    CHECK(gate.stats().longest_wait_s >= 0.1);
  }
}

TEST_CASE("a close that cannot drain gives up after the drain time and names the call", "[gate]") {
  Gate& gate = fresh_gate(GateMode::kWait, true);
  std::atomic<bool> inside{false};
  std::thread busy([&] {
    GatePass pass(gate, "cuMemcpyDtoH_v2");
    inside = true;
    std::this_thread::sleep_for(400ms);
  });
  while (!inside)
    std::this_thread::yield();
  std::string call;
  CHECK_FALSE(gate.close(50ms, &call));
  CHECK(call == "cuMemcpyDtoH_v2");
  gate.open();
  busy.join();
}

TEST_CASE("calls nested in a gated call pass without waiting", "[gate]") {
  Gate& gate = fresh_gate(GateMode::kWait, true);
  std::atomic<bool> done{false};
  std::thread t([&] {
    GatePass outer(gate, "cudaMemcpy");
    // The gate closes while the outer call is inside: its nested driver call must not wait
    // (that would deadlock the close that waits for the outer call).
    std::this_thread::sleep_for(100ms);
    GatePass inner(gate, "cuMemcpyDtoH_v2");
    done = true;
  });
  std::string call;
  std::this_thread::sleep_for(20ms);
  CHECK(gate.close(5000ms, &call));
  t.join();
  CHECK(done);
  gate.open();
}

TEST_CASE("mode off never closes", "[gate]") {
  Gate& gate = fresh_gate(GateMode::kOff, true);
  std::string call;
  CHECK(gate.close(10ms, &call));
  CHECK_FALSE(gate.closed());
  GatePass pass(gate, "cudaLaunchKernel");  // does not wait
}

TEST_CASE("mode wake asks the waker, retries a failed wake, and goes on once woken", "[gate]") {
  Gate& gate = fresh_gate(GateMode::kWake, true);
  std::atomic<int> calls{0};
  gate.set_waker([&](std::string* error) {
    if (++calls == 1) {
      *error = "out of memory";
      return false;
    }
    gate.open();
    return true;
  });
  std::string call;
  REQUIRE(gate.close(1000ms, &call));
  const Clock::time_point t = Clock::now();
  const GateStats before = gate.stats();
  std::thread worker([&] { GatePass pass(gate, "cudaGraphLaunch"); });
  worker.join();
  CHECK(calls == 2);
  CHECK(ms_since(t) >= 900);  // the retry came a second after the failure
  // The waker counts its success once it is back from the wake, which opened the gate already.
  GateStats after = gate.stats();
  for (int i = 0; i < 1000 && after.wakes_on_demand == before.wakes_on_demand; ++i) {
    std::this_thread::sleep_for(1ms);
    after = gate.stats();
  }
  CHECK(after.wake_failures - before.wake_failures == 1);
  CHECK(after.wakes_on_demand - before.wakes_on_demand == 1);
  CHECK_FALSE(gate.closed());
  gate.set_waker(nullptr);
}

TEST_CASE("a thread's slot is given back when it exits", "[gate]") {
  Gate& gate = fresh_gate(GateMode::kWait, true);
  std::vector<std::thread> threads;
  const std::size_t before = gate.stats().threads;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      { GatePass pass(gate, "cudaMemset"); }
      ++ready;
      while (!go)
        std::this_thread::yield();
    });
  }
  while (ready < 4)
    std::this_thread::yield();
  CHECK(gate.stats().threads == before + 4);
  go = true;
  for (auto& t : threads)
    t.join();
  CHECK(gate.stats().threads == before);
}

// Many threads enter and leave gated calls as fast as they can while the gate closes and opens:
// between a successful close and the next open no thread may be inside.
TEST_CASE("no call is inside between a drained close and the next open", "[gate]") {
  for (bool membarrier : {true, false}) {
    CAPTURE(membarrier);
    Gate& gate = fresh_gate(GateMode::kWait, membarrier);
    std::atomic<int> inside{0};
    std::atomic<bool> asleep{false};
    std::atomic<long> violations{0};
    std::atomic<long> passes{0};
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&] {
        while (!stop) {
          GatePass pass(gate, "cudaLaunchKernel");
          ++inside;
          if (asleep.load()) ++violations;
          --inside;
          ++passes;
        }
      });
    }
    for (int cycle = 0; cycle < 200; ++cycle) {
      std::string call;
      REQUIRE(gate.close(5000ms, &call));
      asleep = true;
      if (inside.load() != 0) ++violations;
      std::this_thread::sleep_for(200us);
      asleep = false;
      gate.open();
      std::this_thread::sleep_for(200us);
    }
    stop = true;
    for (auto& t : threads)
      t.join();
    CHECK(violations == 0);
    CHECK(passes > 200);
  }
}

// ---- the engine closes and opens the gate ----

TEST_CASE("the engine's sleep closes the gate and the wake of the last asleep region opens it",
          "[gate][engine]") {
  using namespace gpusleep::test;
  Gate& gate = fresh_gate(GateMode::kWait, true);
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options(), &gate);
  DevicePtr a = must_allocate(engine, 4 * kMiB);
  engine.set_phase_tag("kv_cache");
  DevicePtr b = must_allocate(engine, 2 * kMiB);
  fill(a, 4 * kMiB, 1);

  SleepRequest weights;
  weights.tags = {"default"};
  REQUIRE(engine.sleep(weights).ok);
  CHECK(gate.closed());
  CHECK(engine.status().gate->closed);
  SleepRequest kv;
  kv.tags = {"kv_cache"};
  REQUIRE(engine.sleep(kv).ok);
  WakeRequest wake_weights;
  wake_weights.tags = {"default"};
  REQUIRE(engine.wake(wake_weights).ok);
  CHECK(gate.closed());  // kv_cache is still asleep
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK_FALSE(gate.closed());
  CHECK(holds(a, 4 * kMiB, 1));

  SECTION("a sleep without the gate leaves it open") {
    kv.gate = false;
    REQUIRE(engine.sleep(kv).ok);
    CHECK_FALSE(gate.closed());
    // A gated sleep closes it; waking that tag opens it although kv_cache stays asleep.
    REQUIRE(engine.sleep(weights).ok);
    CHECK(gate.closed());
    REQUIRE(engine.wake(wake_weights).ok);
    CHECK_FALSE(gate.closed());
  }
  SECTION("freeing the last asleep region opens it") {
    REQUIRE(engine.sleep(kv).ok);
    CHECK(gate.closed());
    CHECK(engine.free(b) == FreeOutcome::kFreed);
    CHECK_FALSE(gate.closed());
  }
  SECTION("a sleep that cannot drain a call fails with gpu_busy and changes nothing") {
    std::atomic<bool> inside{false};
    std::thread busy([&] {
      GatePass pass(gate, "cudaMemcpy");
      inside = true;
      std::this_thread::sleep_for(300ms);
    });
    while (!inside)
      std::this_thread::yield();
    Options quick = test_options();
    quick.gate_drain_ms = 30;
    Engine impatient(gpu.driver(), quick, &gate);
    DevicePtr c = must_allocate(impatient, 2 * kMiB);
    fill(c, 2 * kMiB, 3);
    const std::uint64_t used = gpu.used();
    OpResult r = impatient.sleep(SleepRequest{});
    CHECK_FALSE(r.ok);
    CHECK(r.error.code == Failure::kGpuBusy);
    CHECK(r.error.message.find("cudaMemcpy") != std::string::npos);
    CHECK(gpu.used() == used);
    CHECK_FALSE(gate.closed());
    for (const RegionInfo& info : impatient.regions())
      CHECK(info.state == RegionState::kAwake);
    busy.join();
    CHECK(holds(c, 2 * kMiB, 3));
    REQUIRE(impatient.sleep(SleepRequest{}).ok);
    REQUIRE(impatient.wake(WakeRequest{}).ok);
    CHECK(holds(c, 2 * kMiB, 3));
  }
  gate.open();
}

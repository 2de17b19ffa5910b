// The operation in flight, as status shows it: status answers while a sleep or wake runs (it
// takes no operation lock), names the operation, its tags and bytes, and counts the bytes done
// as they move, never backwards and never past the total; once the operation ends it is gone.
#include <catch2/catch.hpp>

#include <atomic>
#include <future>
#include <optional>
#include <thread>
#include <vector>

#include "core/engine.h"
#include "fake_gpu.h"

using namespace gpusleep;
using namespace gpusleep::test;

namespace {

// Engine options under which sleep keeps contents in pageable memory past a 1 MiB budget: they
// move through the staging ring a piece at a time, each piece slowed by the emulated copy delay.
Options pageable_options() {
  Options o = test_options();
  o.default_tag = "weights";
  o.host_budget = BudgetSetting{true, false, 0, kMiB};
  o.pageable = true;
  o.eager_mirrors = false;
  return o;
}

// Runs `op` on another thread and takes status on this one until it returns: every operation
// status seen while it ran, and the operation's result.
template <typename Op>
std::pair<std::vector<OperationStatus>, OpResult> watch(Engine& engine, Op op) {
  std::atomic<bool> done{false};
  auto result = std::async(std::launch::async, [&] {
    OpResult r = op();
    done = true;
    return r;
  });
  std::vector<OperationStatus> seen;
  while (!done) {
    if (std::optional<OperationStatus> s = engine.status().operation) seen.push_back(*s);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return {seen, result.get()};
}

void check_counts(const std::vector<OperationStatus>& seen, const char* op, std::size_t total) {
  REQUIRE_FALSE(seen.empty());
  bool between = false;
  std::size_t last = 0;
  for (const OperationStatus& s : seen) {
    CHECK(s.op == op);
    CHECK(s.tags == std::vector<std::string>{"weights"});
    CHECK(s.regions == 3);
    CHECK(s.total_bytes == total);
    CHECK(s.done_bytes >= last);
    CHECK(s.done_bytes <= total);
    last = s.done_bytes;
    between = between || (s.done_bytes > 0 && s.done_bytes < total);
  }
  CHECK(between);  // counted as it moved, not all at the end
}

}  // namespace

TEST_CASE("status shows a sleep and a wake in flight and counts their bytes as they move",
          "[progress]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), pageable_options());
  std::vector<DevicePtr> bufs;
  // 40 MiB each: three 16 MiB staging pieces or fewer a region, nine in all on four workers, so
  // that they land in several rounds.
  constexpr std::size_t kSize = 40 * kMiB;
  for (int i = 0; i < 3; ++i) {
    bufs.push_back(must_allocate(engine, kSize));
    fill(bufs.back(), kSize, static_cast<std::uint64_t>(i + 1));
  }
  std::size_t total = 0;
  for (const RegionInfo& r : engine.regions())
    total += r.mapped;
  CHECK_FALSE(engine.status().operation.has_value());
  gpu.set_copy_delay_us(20000);

  auto [slept, s] = watch(engine, [&] { return engine.sleep(SleepRequest{}); });
  REQUIRE(s.ok);
  CHECK(s.pageable_bytes > 0);
  check_counts(slept, "sleep", total);
  CHECK_FALSE(engine.status().operation.has_value());

  auto [woken, w] = watch(engine, [&] { return engine.wake(WakeRequest{}); });
  REQUIRE(w.ok);
  check_counts(woken, "wake", total);
  CHECK_FALSE(engine.status().operation.has_value());
  gpu.set_copy_delay_us(0);
  for (int i = 0; i < 3; ++i)
    CHECK(holds(bufs[i], kSize, static_cast<std::uint64_t>(i + 1)));
}

TEST_CASE("a wake waiting for memory says so in status, and a refused one leaves no operation",
          "[progress]") {
  FakeGpu gpu;
  Options o = test_options();
  o.default_tag = "weights";
  Engine engine(gpu.driver(), o);
  for (int i = 0; i < 3; ++i)
    must_allocate(engine, 4 * kMiB);
  REQUIRE(engine.sleep(SleepRequest{}).ok);
  // The device shrinks to less than the regions need, as when another process holds the rest:
  // the wake waits for memory.
  const std::uint64_t capacity = gpu.capacity();
  gpu.set_capacity(gpu.used() + 2 * kMiB);
  WakeRequest request;
  request.wait_seconds = 30;
  std::atomic<bool> seen_waiting{false};
  auto result = std::async(std::launch::async, [&] { return engine.wake(request); });
  for (int i = 0; i < 5000 && !seen_waiting; ++i) {
    std::optional<OperationStatus> s = engine.status().operation;
    if (s && s->waiting) {
      CHECK(s->op == "wake");
      CHECK(s->done_bytes < s->total_bytes);
      seen_waiting = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  CHECK(seen_waiting);
  gpu.set_capacity(capacity);
  CHECK(result.get().ok);
  CHECK_FALSE(engine.status().operation.has_value());
  OpResult unknown = engine.sleep(SleepRequest{{"nosuch"}, std::nullopt});
  CHECK_FALSE(unknown.ok);
  CHECK_FALSE(engine.status().operation.has_value());
}

TEST_CASE(
    "a wake from pinned mirrors counts its restores as they land, and a failed one rolls back",
    "[progress]") {
  FakeGpu gpu;
  Options o = test_options();
  o.default_tag = "weights";
  Engine engine(gpu.driver(), o);
  // 240 MiB: marks every 64 MiB, after the second, fourth and sixth region.
  constexpr std::size_t kSize = 40 * kMiB;
  std::vector<DevicePtr> bufs;
  for (int i = 0; i < 6; ++i) {
    bufs.push_back(must_allocate(engine, kSize));
    fill(bufs.back(), kSize, static_cast<std::uint64_t>(i + 11));
  }
  std::size_t total = 0;
  for (const RegionInfo& r : engine.regions())
    total += r.mapped;
  REQUIRE(engine.sleep(SleepRequest{}).ok);

  // A mark that fails to land fails the wake: the regions stay asleep with their mirrors.
  gpu.fail("cuEventSynchronize", 0, 1);
  OpResult failed = engine.wake(WakeRequest{});
  CHECK_FALSE(failed.ok);
  for (const RegionInfo& r : engine.regions())
    CHECK(r.state == RegionState::kAsleep);
  CHECK_FALSE(engine.status().operation.has_value());
  // So does a restore that cannot be queued after marks were made: they are dropped.
  gpu.fail("cuMemcpyHtoDAsync_v2", 100, 1);
  CHECK_FALSE(engine.wake(WakeRequest{}).ok);
  for (const RegionInfo& r : engine.regions())
    CHECK(r.state == RegionState::kAsleep);

  gpu.set_copy_delay_us(2000);
  auto [woken, w] = watch(engine, [&] { return engine.wake(WakeRequest{}); });
  REQUIRE(w.ok);
  std::size_t last = 0;
  for (const OperationStatus& s : woken) {
    CHECK(s.total_bytes == total);
    CHECK(s.done_bytes >= last);
    CHECK(s.done_bytes <= total);
    last = s.done_bytes;
  }
  gpu.set_copy_delay_us(0);
  for (int i = 0; i < 6; ++i)
    CHECK(holds(bufs[i], kSize, static_cast<std::uint64_t>(i + 11)));
}

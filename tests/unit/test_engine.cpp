// The engine over the emulated driver: allocation, sleep/wake state machine, policies, mirrors,
// idempotence (failed operations and their rollback: test_engine_failures.cpp).
#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

#include "fake_gpu.h"

using namespace gpusleep;
using namespace gpusleep::test;

TEST_CASE("allocation maps accessible memory rounded up to the granularity, tagged by default",
          "[engine]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  const std::uint64_t used0 = gpu.used();
  DevicePtr va = must_allocate(engine, 3 * kMiB);
  CHECK(va % (2 * kMiB) == 0);
  CHECK(gpu.used() - used0 == 4 * kMiB);
  fill(va, 3 * kMiB, 1);
  CHECK(holds(va, 3 * kMiB, 1));
  auto regions = engine.regions();
  REQUIRE(regions.size() == 1);
  CHECK(regions[0].size == 3 * kMiB);
  CHECK(regions[0].mapped == 4 * kMiB);
  CHECK(regions[0].tag == "default");
  CHECK(regions[0].state == RegionState::kAwake);
  CHECK(engine.free(va) == FreeOutcome::kFreed);
  CHECK(gpu.used() == used0);
}

TEST_CASE("offload sleep releases device memory into a pinned mirror and wake restores it in place",
          "[engine]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  const std::uint64_t used0 = gpu.used();
  DevicePtr a = must_allocate(engine, 6 * kMiB);
  DevicePtr b = must_allocate(engine, 1000);
  fill(a, 6 * kMiB, 7);
  fill(b, 1000, 8);
  FakeCudaStats before = gpu.stats();

  OpResult slept = engine.sleep(SleepRequest{});
  REQUIRE(slept.ok);
  CHECK(slept.regions == 2);
  CHECK(slept.bytes == 8 * kMiB);                // device memory, in 2 MiB granules
  CHECK(slept.copied_bytes == 6 * kMiB + 4096);  // what was asked for, in 4 KiB pages
  CHECK(slept.discarded_bytes == 0);
  CHECK(gpu.used() == used0);
  FakeCudaStats mid = gpu.stats();
  CHECK(mid.pinned_copy_bytes - before.pinned_copy_bytes == 6 * kMiB + 4096);
  CHECK(mid.pageable_copy_bytes == before.pageable_copy_bytes);
  CHECK(mid.syncs > before.syncs);  // quiesced before unmapping
  for (const RegionInfo& r : engine.regions())
    CHECK(r.state == RegionState::kAsleep);

  OpResult woke = engine.wake(WakeRequest{});
  REQUIRE(woke.ok);
  CHECK(woke.regions == 2);
  CHECK(woke.copied_bytes == 6 * kMiB + 4096);
  CHECK(gpu.used() - used0 == 8 * kMiB);
  CHECK(holds(a, 6 * kMiB, 7));
  CHECK(holds(b, 1000, 8));
  CHECK(gpu.stats().pageable_copy_bytes == before.pageable_copy_bytes);
}

TEST_CASE("discard sleep drops contents and wake maps fresh memory at the same address",
          "[engine]") {
  FakeGpu gpu;
  Options o = test_options();
  o.default_tag = "kv_cache";  // discards by default
  Engine engine(gpu.driver(), o);
  DevicePtr kv = must_allocate(engine, 4 * kMiB);
  fill(kv, 4 * kMiB, 3);
  FakeCudaStats before = gpu.stats();
  OpResult slept = engine.sleep(SleepRequest{{"kv_cache"}, std::nullopt});
  REQUIRE(slept.ok);
  CHECK(slept.discarded_bytes == 4 * kMiB);
  CHECK(slept.copied_bytes == 0);
  CHECK(gpu.stats().pinned_copy_bytes == before.pinned_copy_bytes);
  CHECK(gpu.stats().host_registrations == before.host_registrations);  // no mirror for discard
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK(engine.regions()[0].va == kv);
  CHECK(all_zero(kv, 4 * kMiB));
}

TEST_CASE("a policy given with the request overrides the tag's policy", "[engine]") {
  FakeGpu gpu;
  Options o = test_options();
  o.default_tag = "kv_cache";
  Engine engine(gpu.driver(), o);
  DevicePtr kv = must_allocate(engine, 2 * kMiB);
  fill(kv, 2 * kMiB, 5);
  OpResult slept = engine.sleep(SleepRequest{{}, Policy::kOffload});
  REQUIRE(slept.ok);
  CHECK(slept.copied_bytes == 2 * kMiB);
  REQUIRE(slept.tags.size() == 1);
  CHECK(slept.tags[0].policy == Policy::kOffload);
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK(holds(kv, 2 * kMiB, 5));
}

TEST_CASE("phase tags route allocations, and sleep touches only the tags asked for", "[engine]") {
  FakeGpu gpu;
  Options o = test_options();
  o.default_tag = "weights";
  Engine engine(gpu.driver(), o);
  DevicePtr w = must_allocate(engine, 2 * kMiB);
  REQUIRE(engine.set_phase_tag("kv_cache"));
  DevicePtr kv = must_allocate(engine, 8 * kMiB);
  REQUIRE(engine.set_phase_tag(""));
  DevicePtr w2 = must_allocate(engine, 2 * kMiB);
  fill(w, 2 * kMiB, 1);
  fill(w2, 2 * kMiB, 2);
  const std::uint64_t used_awake = gpu.used();

  OpResult slept = engine.sleep(SleepRequest{{"kv_cache"}, std::nullopt});
  REQUIRE(slept.ok);
  CHECK(slept.bytes == 8 * kMiB);
  CHECK(used_awake - gpu.used() == 8 * kMiB);
  EngineStatus s = engine.status();
  REQUIRE(find_tag(s, "weights") != nullptr);
  REQUIRE(find_tag(s, "kv_cache") != nullptr);
  CHECK(find_tag(s, "weights")->resident_bytes == 4 * kMiB);
  CHECK(find_tag(s, "weights")->regions == 2);
  CHECK(find_tag(s, "kv_cache")->asleep_bytes == 8 * kMiB);
  CHECK(find_tag(s, "kv_cache")->policy == Policy::kDiscard);
  CHECK(find_tag(s, "kv_cache")->last_sleep_ms.has_value());
  CHECK(holds(w, 2 * kMiB, 1));
  CHECK(holds(w2, 2 * kMiB, 2));
  REQUIRE(engine.wake(WakeRequest{{"kv_cache"}}).ok);
  (void)kv;
}

TEST_CASE("sleeping a sleeping tag and waking an awake tag are reported no-ops", "[engine]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  must_allocate(engine, 2 * kMiB);
  OpResult w = engine.wake(WakeRequest{{"default"}});
  REQUIRE(w.ok);
  CHECK(w.regions == 0);
  CHECK(w.noop == std::vector<std::string>{"default"});
  REQUIRE(engine.sleep(SleepRequest{{"default"}, std::nullopt}).ok);
  const std::uint64_t used = gpu.used();
  OpResult again = engine.sleep(SleepRequest{{"default"}, std::nullopt});
  REQUIRE(again.ok);
  CHECK(again.regions == 0);
  CHECK(again.noop == std::vector<std::string>{"default"});
  CHECK(gpu.used() == used);
}

TEST_CASE("an unknown tag is an error that names the known tags", "[engine]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  must_allocate(engine, 2 * kMiB);
  OpResult r = engine.sleep(SleepRequest{{"default", "nope"}, std::nullopt});
  CHECK_FALSE(r.ok);
  CHECK(r.error.code == Failure::kUnknownTag);
  CHECK(r.error.message.find("'nope'") != std::string::npos);
  CHECK(r.error.message.find("default") != std::string::npos);
  for (const RegionInfo& info : engine.regions())
    CHECK(info.state == RegionState::kAwake);
  OpResult bad = engine.wake(WakeRequest{{"bad tag!"}});
  CHECK(bad.error.code == Failure::kInvalidArgument);
}

TEST_CASE("mirrors are kept across cycles: a second sleep pins nothing new", "[engine]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  DevicePtr a = must_allocate(engine, 300 * kMiB);  // two mirror pieces
  fill(a, 300 * kMiB, 5);
  REQUIRE(engine.sleep(SleepRequest{}).ok);
  REQUIRE(engine.wake(WakeRequest{}).ok);
  const FakeCudaStats first = gpu.stats();
  CHECK(engine.status().tags[0].mirror_bytes == 300 * kMiB);
  REQUIRE(engine.sleep(SleepRequest{}).ok);
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK(gpu.stats().host_registrations == first.host_registrations);
  CHECK(holds(a, 300 * kMiB, 5));
  CHECK(gpu.stats().events_created == gpu.stats().events_destroyed);
}

TEST_CASE("mirrors are prepared in the background as offload regions are allocated", "[engine]") {
  FakeGpu gpu;
  const FakeCudaStats before = gpu.stats();
  Engine engine(gpu.driver(), test_options());
  must_allocate(engine, 6 * kMiB);
  engine.drain_background();
  CHECK(gpu.stats().registered_bytes - before.registered_bytes == 6 * kMiB);
  CHECK(engine.regions()[0].mirror_bytes == 6 * kMiB);
}

TEST_CASE("allocating during the host's graph capture pins mirrors without breaking the capture",
          "[engine]") {
  FakeGpu gpu;
  const FakeCudaStats before = gpu.stats();
  Engine engine(gpu.driver(), test_options());
  gpu.begin_capture();  // as torch.cuda.graph() does, in global mode
  DevicePtr va = must_allocate(engine, 6 * kMiB);
  engine.drain_background();
  CHECK(gpu.end_capture());
  CHECK(gpu.stats().registered_bytes - before.registered_bytes == 6 * kMiB);
  fill(va, 6 * kMiB, 3);
  REQUIRE(engine.sleep(SleepRequest{}).ok);
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK(holds(va, 6 * kMiB, 3));
}

TEST_CASE("allocations freed soon after they are made are never pinned", "[engine]") {
  FakeGpu gpu;
  const FakeCudaStats before = gpu.stats();
  Engine engine(gpu.driver(), test_options());
  for (int i = 0; i < 20; ++i)
    engine.free(must_allocate(engine, 4 * kMiB));
  engine.drain_background();
  CHECK(gpu.stats().host_registrations == before.host_registrations);
}

TEST_CASE("without eager mirrors nothing is pinned before the first sleep", "[engine]") {
  FakeGpu gpu;
  Options o = test_options();
  o.eager_mirrors = false;
  const FakeCudaStats before = gpu.stats();
  Engine engine(gpu.driver(), o);
  DevicePtr a = must_allocate(engine, 6 * kMiB);
  fill(a, 6 * kMiB, 2);
  engine.drain_background();
  CHECK(gpu.stats().registered_bytes == before.registered_bytes);
  REQUIRE(engine.sleep(SleepRequest{}).ok);
  CHECK(gpu.stats().registered_bytes - before.registered_bytes == 6 * kMiB);
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK(holds(a, 6 * kMiB, 2));
}

TEST_CASE("with keep_mirrors off, mirrors are unpinned and freed after wake", "[engine]") {
  FakeGpu gpu;
  Options o = test_options();
  o.keep_mirrors = false;
  const FakeCudaStats before = gpu.stats();
  Engine engine(gpu.driver(), o);
  DevicePtr a = must_allocate(engine, 4 * kMiB);
  fill(a, 4 * kMiB, 3);
  for (int cycle = 0; cycle < 2; ++cycle) {
    REQUIRE(engine.sleep(SleepRequest{}).ok);
    REQUIRE(engine.wake(WakeRequest{}).ok);
    engine.drain_background();  // mirrors are unpinned on a helper thread
    CHECK(gpu.stats().registered_bytes == before.registered_bytes);
    CHECK(engine.status().tags[0].mirror_bytes == 0);
    CHECK(holds(a, 4 * kMiB, 3));
  }
}

TEST_CASE("freeing an asleep region returns its mirror and address range", "[engine]") {
  FakeGpu gpu;
  const FakeCudaStats before = gpu.stats();
  Engine engine(gpu.driver(), test_options());
  const std::uint64_t used0 = gpu.used();
  DevicePtr a = must_allocate(engine, 4 * kMiB);
  REQUIRE(engine.sleep(SleepRequest{}).ok);
  CHECK(engine.free(a) == FreeOutcome::kFreed);
  CHECK(engine.regions().empty());
  CHECK(gpu.used() == used0);
  engine.drain_background();  // mirrors are unpinned on a helper thread
  CHECK(gpu.stats().registered_bytes == before.registered_bytes);
  CHECK(engine.free(a) == FreeOutcome::kNotOurs);
  // The tag is still known: sleeping it is a no-op, not an error.
  OpResult r = engine.sleep(SleepRequest{{"default"}, std::nullopt});
  CHECK(r.ok);
  CHECK(r.regions == 0);
}

TEST_CASE("pointers the engine did not make are not its to free", "[engine]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  DevicePtr a = must_allocate(engine, 2 * kMiB);
  CHECK(engine.free(a + 256) == FreeOutcome::kNotOurs);
  CHECK(engine.free(0x1000) == FreeOutcome::kNotOurs);
  engine.note_passthrough(0x5000, 100);
  CHECK(engine.status().passthrough_bytes == 100);
  CHECK(engine.forget_passthrough(0x5000));
  CHECK_FALSE(engine.forget_passthrough(0x5000));
  CHECK(engine.status().passthrough_allocations == 0);
}

TEST_CASE("out of device memory at allocation is reported and leaks nothing", "[engine]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  const std::uint64_t used0 = gpu.used();
  gpu.set_capacity(used0 + 8 * kMiB);
  DevicePtr va = 0;
  CHECK(engine.allocate(16 * kMiB, 0, 0, &va) == AllocOutcome::kOutOfMemory);
  CHECK(engine.regions().empty());
  CHECK(gpu.used() == used0);
  CHECK(engine.allocate(8 * kMiB, 0, 0, &va) == AllocOutcome::kManaged);
}

TEST_CASE("allocations the engine cannot manage pass through", "[engine]") {
  FakeGpu gpu;
  DevicePtr va = 0;
  SECTION("a failure other than out-of-memory") {
    Engine engine(gpu.driver(), test_options());
    const std::uint64_t used0 = gpu.used();
    gpu.fail("cuMemSetAccess", 0, 1);
    CHECK(engine.allocate(2 * kMiB, 0, 0, &va) == AllocOutcome::kPassthrough);
    CHECK(gpu.used() == used0);
    CHECK(engine.regions().empty());
  }
  SECTION("a device without virtual memory management") {
    gpu.set_vmm(false);
    Engine engine(gpu.driver(), test_options());
    CHECK(engine.allocate(2 * kMiB, 0, 0, &va) == AllocOutcome::kPassthrough);
  }
  SECTION("the library disabled, or zero bytes") {
    Options o = test_options();
    o.disable = true;
    Engine disabled(gpu.driver(), o);
    CHECK(disabled.allocate(2 * kMiB, 0, 0, &va) == AllocOutcome::kPassthrough);
    Engine engine(gpu.driver(), test_options());
    CHECK(engine.allocate(0, 0, 0, &va) == AllocOutcome::kPassthrough);
  }
}

TEST_CASE("status reports every tag's bytes by state and the devices' memory", "[engine]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  must_allocate(engine, 2 * kMiB);
  engine.set_phase_tag("kv_cache");
  must_allocate(engine, 4 * kMiB);
  REQUIRE(engine.sleep(SleepRequest{{"kv_cache"}, std::nullopt}).ok);
  EngineStatus s = engine.status();
  CHECK(s.phase_tag == "kv_cache");
  CHECK(s.default_tag == "default");
  REQUIRE(s.devices.size() == 1);
  CHECK(s.devices[0].known);
  CHECK(s.devices[0].total_bytes == kDefaultCapacity);
  CHECK(s.devices[0].free_bytes == kDefaultCapacity - gpu.used());
  const TagStatus* kv = find_tag(s, "kv_cache");
  REQUIRE(kv != nullptr);
  CHECK(kv->asleep_regions == 1);
  CHECK(kv->awake_regions == 0);
  CHECK(kv->asleep_bytes == 4 * kMiB);
  CHECK(kv->mirror_bytes == 0);
  const TagStatus* def = find_tag(s, "default");
  REQUIRE(def != nullptr);
  CHECK(def->resident_bytes == 2 * kMiB);
  CHECK_FALSE(def->last_sleep_ms.has_value());
}

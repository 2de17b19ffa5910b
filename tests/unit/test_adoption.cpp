// Adoption of the program's own physical memory (preload/core/adoption.h), driven as the hooks
// drive it around the real cuMemCreate, cuMemMap, cuMemSetAccess, cuMemUnmap and cuMemRelease.
#include <catch2/catch.hpp>

#include <cuda.h>

#include "fake_gpu.h"

using namespace gpusleep;
using namespace gpusleep::test;

namespace {

constexpr std::size_t kBytes = 4 * kMiB;
constexpr int kReadWrite = 3;  // CU_MEM_ACCESS_FLAGS_PROT_READWRITE

// A program that creates a handle, maps it once, whole, and grants its device access.
struct Program {
  explicit Program(FakeGpu& gpu, Engine& engine) : d(gpu.driver()), engine(engine) {
    Context ctx = nullptr;
    REQUIRE(d.ensure_context(0, &ctx) == kDrvOk);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = 0;
    REQUIRE(d.create(0, kBytes, &key) == kDrvOk);
    engine.app_created(key, kBytes, 0, &prop, sizeof prop, 0);
    REQUIRE(d.reserve(kBytes, 2 * kMiB, &va) == kDrvOk);
  }
  // cuMemMap as the hook does it: the handle behind the key is the one mapped.
  void map() {
    PhysHandle real = 0;
    REQUIRE(engine.app_prepare_map(key, &real) == Engine::AppState::kResident);
    REQUIRE(d.map(va, kBytes, real) == kDrvOk);
    engine.app_mapped(va, kBytes, 0, key);
  }
  void grant() {
    REQUIRE(engine.app_access_allowed(va, kBytes));
    REQUIRE(d.set_access_flags(va, kBytes, 0, kReadWrite) == kDrvOk);
    engine.app_access_set(va, kBytes, {{0, kReadWrite}});
  }
  // cuMemUnmap, cuMemRelease and the address range, as the program ends.
  void tear_down() {
    if (engine.app_unmap(va) == Engine::AppUnmap::kUnmapReal)
      REQUIRE(d.unmap(va, kBytes) == kDrvOk);
    PhysHandle real = 0;
    REQUIRE(engine.app_release(key, &real) == Engine::AppRelease::kReleaseReal);
    REQUIRE(d.release(real) == kDrvOk);
    REQUIRE(d.unreserve(va, kBytes) == kDrvOk);
  }

  Driver& d;
  Engine& engine;
  CUmemAllocationProp prop{};
  PhysHandle key = 0;
  DevicePtr va = 0;
};

std::size_t unsleepable_app(Engine& engine) {
  for (const UnsleepableStatus& u : engine.status().unsleepable) {
    if (u.kind == "application_vmm") return u.bytes;
  }
  FAIL("status lacks application_vmm");
  return 0;
}

}  // namespace

TEST_CASE("a handle mapped once, whole, with access granted is adopted and sleeps in place",
          "[adoption]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  const std::uint64_t used0 = gpu.used();
  Program p(gpu, engine);
  p.map();
  CHECK(engine.regions().empty());  // no access yet: not a region
  CHECK(unsleepable_app(engine) == kBytes);
  p.grant();
  auto regions = engine.regions();
  REQUIRE(regions.size() == 1);
  CHECK(regions[0].adopted);
  CHECK(regions[0].va == p.va);
  CHECK(unsleepable_app(engine) == 0);
  fill(p.va, kBytes, 5);

  OpResult s = engine.sleep(SleepRequest{});
  REQUIRE(s.ok);
  CHECK(s.regions == 1);
  CHECK(gpu.used() == used0);
  PhysHandle real = 0;
  CHECK(engine.app_current(p.key, &real) == Engine::AppState::kAsleep);
  CHECK_FALSE(engine.app_access_allowed(p.va, kBytes));

  OpResult w = engine.wake(WakeRequest{});
  REQUIRE(w.ok);
  CHECK(holds(p.va, kBytes, 5));
  CHECK(gpu.used() == used0 + kBytes);
  REQUIRE(engine.app_current(p.key, &real) == Engine::AppState::kResident);
  CHECK(engine.app_key_of(real) == p.key);  // the program still knows it by its own value
  CHECK(engine.app_key_taken(p.key));
  p.tear_down();
  CHECK(engine.regions().empty());
  CHECK_FALSE(engine.app_key_taken(p.key));
  CHECK(gpu.used() == used0);
}

TEST_CASE("a handle exported to another process leaves the regions and stays awake", "[adoption]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  Program p(gpu, engine);
  p.map();
  p.grant();
  REQUIRE(engine.regions().size() == 1);
  PhysHandle real = 0;
  CHECK(engine.app_pin(p.key, "exported to another process", &real) == Engine::AppState::kResident);
  CHECK(real == p.key);
  CHECK(engine.regions().empty());
  CHECK(unsleepable_app(engine) == kBytes);
  const std::uint64_t used = gpu.used();
  OpResult s = engine.sleep(SleepRequest{});
  CHECK(s.ok);
  CHECK(s.regions == 0);
  CHECK(gpu.used() == used);
  p.tear_down();
}

TEST_CASE("an asleep handle refuses export, and a second mapping takes it out of the regions",
          "[adoption]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  Program p(gpu, engine);
  p.map();
  p.grant();
  REQUIRE(engine.sleep(SleepRequest{}).ok);
  PhysHandle real = 0;
  CHECK(engine.app_pin(p.key, "exported to another process", &real) == Engine::AppState::kAsleep);
  CHECK(engine.app_prepare_map(p.key, &real) == Engine::AppState::kAsleep);
  REQUIRE(engine.wake(WakeRequest{}).ok);
  // A second mapping of the same handle: not sleepable any more.
  CHECK(engine.app_prepare_map(p.key, &real) == Engine::AppState::kResident);
  CHECK(engine.regions().empty());
  CHECK(unsleepable_app(engine) == kBytes);
  p.tear_down();
}

TEST_CASE("a handle unmapped while asleep is lost, and mapped again with fresh memory",
          "[adoption]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  const std::uint64_t used0 = gpu.used();
  Program p(gpu, engine);
  p.map();
  p.grant();
  REQUIRE(engine.sleep(SleepRequest{}).ok);
  CHECK(engine.app_unmap(p.va) == Engine::AppUnmap::kAlreadyUnmapped);  // the sleep unmapped it
  PhysHandle real = 0;
  CHECK(engine.app_current(p.key, &real) == Engine::AppState::kLost);
  CHECK(engine.regions().empty());
  p.map();  // fresh memory behind the same key
  REQUIRE(engine.app_current(p.key, &real) == Engine::AppState::kResident);
  CHECK(real != 0);
  CHECK(gpu.used() == used0 + kBytes);
  p.tear_down();
  CHECK(gpu.used() == used0);
}

TEST_CASE("references the program retains keep an adopted handle until the last release",
          "[adoption]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  Program p(gpu, engine);
  p.map();
  p.grant();
  CHECK(engine.app_retained(p.key) == 1);  // it held one (the create) before
  PhysHandle real = 0;
  CHECK(engine.app_release(p.key, &real) == Engine::AppRelease::kStillHeld);
  CHECK(engine.app_key_taken(p.key));
  p.tear_down();  // the last release lets the driver's handle go
  CHECK_FALSE(engine.app_key_taken(p.key));
}

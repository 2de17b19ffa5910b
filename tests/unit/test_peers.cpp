// Peer access (preload/core/peers.h) over two emulated devices: a grant reaches the regions there
// now, later allocations and regions woken later; a revoke stops only future grants.
#include <catch2/catch.hpp>

#include <dlfcn.h>

#include <cstdlib>

#include "fake_gpu.h"

using namespace gpusleep;
using namespace gpusleep::test;

TEST_CASE("a peer grant covers existing regions, new ones and woken ones until it is revoked",
          "[peers]") {
  // The emulated driver reads its device count when it starts (each test runs in a process of
  // its own under CTest).
  setenv("FAKECUDA_DEVICES", "2", 0);
  FakeGpu gpu;
  if (gpu.capacity(1) == 0) {
    WARN("the emulated driver started with one device; run this test in a process of its own");
    return;
  }
  auto access = reinterpret_cast<int (*)(int, std::uint64_t, std::uint64_t)>(
      dlsym(dlopen(FAKECUDA_LIBRARY, RTLD_NOW | RTLD_NOLOAD), "fakecuda_kernel_access"));
  REQUIRE(access != nullptr);
  Engine engine(gpu.driver(), test_options());
  const DevicePtr before = must_allocate(engine, 2 * kMiB);
  CHECK(access(0, before, 2 * kMiB));
  CHECK_FALSE(access(1, before, 2 * kMiB));

  engine.grant_peer(1, 0);
  CHECK(access(1, before, 2 * kMiB));
  const DevicePtr after = must_allocate(engine, 2 * kMiB);
  CHECK(access(1, after, 2 * kMiB));
  auto peers = engine.status().peers;
  REQUIRE(peers.size() == 1);
  CHECK(peers[0].accessor == 1);
  CHECK(peers[0].owner == 0);

  REQUIRE(engine.sleep(SleepRequest{}).ok);
  CHECK_FALSE(access(1, before, 2 * kMiB));
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK(access(1, before, 2 * kMiB));
  CHECK(access(1, after, 2 * kMiB));

  engine.revoke_peer(1, 0);
  CHECK(engine.status().peers.empty());
  CHECK(access(1, before, 2 * kMiB));  // mappings keep the access they have
  const DevicePtr revoked = must_allocate(engine, 2 * kMiB);
  CHECK_FALSE(access(1, revoked, 2 * kMiB));
  REQUIRE(engine.sleep(SleepRequest{}).ok);
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK_FALSE(access(1, before, 2 * kMiB));  // a wake grants only what is in force
}

TEST_CASE("a device granted access to itself, or a negative device, changes nothing", "[peers]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  engine.grant_peer(0, 0);
  engine.grant_peer(-1, 0);
  engine.grant_peer(0, -1);
  CHECK(engine.status().peers.empty());
}

// The copier (preload/core/copier.h) over the emulated driver: copies split in chunks over
// several streams land whole and exactly, fences mark what was queued, and failures are reported.
#include <catch2/catch.hpp>

#include <vector>

#include "core/copier.h"
#include "fake_gpu.h"

using namespace gpusleep;
using namespace gpusleep::test;

namespace {

// Device memory of `bytes` on device 0, mapped and accessible.
struct DeviceBuffer {
  DeviceBuffer(Driver& d, std::size_t bytes) : d(d), bytes(bytes) {
    REQUIRE(d.ensure_context(0, &ctx) == kDrvOk);
    REQUIRE(d.reserve(bytes, 2 * kMiB, &va) == kDrvOk);
    REQUIRE(d.create(0, bytes, &handle) == kDrvOk);
    REQUIRE(d.map(va, bytes, handle) == kDrvOk);
    REQUIRE(d.set_access(va, bytes, 0) == kDrvOk);
  }
  ~DeviceBuffer() {
    d.unmap(va, bytes);
    d.release(handle);
    d.unreserve(va, bytes);
  }
  Driver& d;
  std::size_t bytes;
  Context ctx = nullptr;
  DevicePtr va = 0;
  PhysHandle handle = 0;
};

}  // namespace

TEST_CASE("a copy split over chunks and streams lands whole, and not a byte past its end",
          "[copier]") {
  FakeGpu gpu;
  DeviceBuffer dev(gpu.driver(), 8 * kMiB);
  Copier copier(gpu.driver(), 3, 2 * kMiB);
  const std::size_t bytes = 7 * kMiB + 4096;  // three and a half chunks
  fill(dev.va, 8 * kMiB, 3);
  std::vector<std::uint64_t> host(8 * kMiB / 8, 0);
  REQUIRE(copier.issue(dev.ctx, Direction::kToHost, host.data(), dev.va, bytes) == kDrvOk);
  REQUIRE(copier.wait() == kDrvOk);
  CHECK(holds(reinterpret_cast<DevicePtr>(host.data()), bytes, 3));
  CHECK(all_zero(reinterpret_cast<DevicePtr>(host.data()) + bytes, 8 * kMiB - bytes));

  fill(reinterpret_cast<DevicePtr>(host.data()), 8 * kMiB, 4);
  fill(dev.va, 8 * kMiB, 0);
  const DevicePtr tail = dev.va + bytes;
  const std::vector<std::uint64_t> before(reinterpret_cast<std::uint64_t*>(tail),
                                          reinterpret_cast<std::uint64_t*>(dev.va + 8 * kMiB));
  REQUIRE(copier.issue(dev.ctx, Direction::kToDevice, host.data(), dev.va, bytes) == kDrvOk);
  REQUIRE(copier.wait() == kDrvOk);
  CHECK(holds(dev.va, bytes, 4));
  CHECK(std::equal(before.begin(), before.end(), reinterpret_cast<std::uint64_t*>(tail)));
}

TEST_CASE("a fence is reached once the copies queued before it are done", "[copier]") {
  FakeGpu gpu;
  DeviceBuffer dev(gpu.driver(), 4 * kMiB);
  Copier copier(gpu.driver(), 2, kMiB);
  fill(dev.va, 4 * kMiB, 8);
  std::vector<std::uint64_t> first(2 * kMiB / 8, 0);
  std::vector<std::uint64_t> second(2 * kMiB / 8, 0);
  Copier::Fence fence;
  REQUIRE(copier.issue(dev.ctx, Direction::kToHost, first.data(), dev.va, 2 * kMiB) == kDrvOk);
  REQUIRE(copier.fence(&fence) == kDrvOk);
  REQUIRE(copier.issue(dev.ctx, Direction::kToHost, second.data(), dev.va + 2 * kMiB, 2 * kMiB) ==
          kDrvOk);
  REQUIRE(copier.wait(&fence) == kDrvOk);
  CHECK(holds(reinterpret_cast<DevicePtr>(first.data()), 2 * kMiB, 8));
  REQUIRE(copier.wait() == kDrvOk);
  const auto* w = second.data();
  bool tail_ok = true;
  for (std::size_t i = 0; i < second.size(); ++i)
    tail_ok = tail_ok && w[i] == pattern(8, i + 2 * kMiB / 8);
  CHECK(tail_ok);
}

TEST_CASE("a copy that cannot be queued is reported by issue and again by wait", "[copier]") {
  FakeGpu gpu;
  DeviceBuffer dev(gpu.driver(), 4 * kMiB);
  Copier copier(gpu.driver(), 2, kMiB);
  std::vector<std::uint64_t> host(4 * kMiB / 8, 0);
  gpu.fail("cuMemcpyDtoHAsync_v2", 1, 1);  // the second chunk
  CHECK(copier.issue(dev.ctx, Direction::kToHost, host.data(), dev.va, 4 * kMiB) != kDrvOk);
  CHECK(copier.wait() != kDrvOk);
  // The error is reported once; the copier works again afterwards.
  fill(dev.va, 4 * kMiB, 2);
  REQUIRE(copier.issue(dev.ctx, Direction::kToHost, host.data(), dev.va, 4 * kMiB) == kDrvOk);
  REQUIRE(copier.wait() == kDrvOk);
  CHECK(holds(reinterpret_cast<DevicePtr>(host.data()), 4 * kMiB, 2));
}

TEST_CASE("a copy that fails on the device is reported at its fence", "[copier]") {
  FakeGpu gpu;
  DeviceBuffer dev(gpu.driver(), 2 * kMiB);
  Copier copier(gpu.driver(), 2, kMiB);
  std::vector<std::uint64_t> host(2 * kMiB / 8, 0);
  Copier::Fence fence;
  REQUIRE(copier.issue(dev.ctx, Direction::kToHost, host.data(), dev.va, 2 * kMiB) == kDrvOk);
  REQUIRE(copier.fence(&fence) == kDrvOk);
  gpu.fail("cuEventSynchronize", 0, 1);
  CHECK(copier.wait(&fence) != kDrvOk);
  copier.wait();
}

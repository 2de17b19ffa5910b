// The staging ring over the emulated driver: contents move intact both ways through a few small
// pinned buffers, in any job and chunk shape, and the first failure stops it with its reason.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "core/staging.h"
#include "fake_gpu.h"

using namespace gpusleep;
using namespace gpusleep::test;

namespace {

struct DeviceBlock {
  Driver& d;
  DevicePtr va = 0;
  PhysHandle h = 0;
  std::size_t n;
  DeviceBlock(Driver& driver, std::size_t bytes) : d(driver), n(bytes) {
    REQUIRE(d.reserve(n, 2 * kMiB, &va) == kDrvOk);
    REQUIRE(d.create(0, n, &h) == kDrvOk);
    REQUIRE(d.map(va, n, h) == kDrvOk);
    REQUIRE(d.set_access(va, n, 0) == kDrvOk);
  }
  ~DeviceBlock() {
    d.unmap(va, n);
    d.release(h);
    d.unreserve(va, n);
  }
};

StagingRing::Job copy_job(Context ctx, DevicePtr dev, std::size_t bytes, char* host) {
  return StagingRing::Job{ctx, dev, bytes,
                          [host](std::size_t off, char* data, std::size_t n, std::string*) {
                            std::memcpy(host + off, data, n);
                            return true;
                          }};
}

StagingRing::Job fill_job(Context ctx, DevicePtr dev, std::size_t bytes, const char* host) {
  return StagingRing::Job{ctx, dev, bytes,
                          [host](std::size_t off, char* data, std::size_t n, std::string*) {
                            std::memcpy(data, host + off, n);
                            return true;
                          }};
}

}  // namespace

TEST_CASE("staging ring moves several regions out and back intact, in chunks over its workers",
          "[staging]") {
  FakeGpu gpu;
  Context ctx = nullptr;
  REQUIRE(gpu.driver().ensure_context(0, &ctx) == kDrvOk);
  DeviceBlock a(gpu.driver(), 6 * kMiB);
  DeviceBlock b(gpu.driver(), 2 * kMiB);
  fill(a.va, 6 * kMiB, 11);
  fill(b.va, 2 * kMiB, 12);
  const std::size_t a_bytes = 6 * kMiB - 4096;  // not a whole number of chunks
  std::vector<char> host_a(a_bytes), host_b(2 * kMiB);
  FakeCudaStats before = gpu.stats();
  StagingRing ring(gpu.driver(), 3, 1 * kMiB, nullptr);
  std::string error;
  REQUIRE(ring.to_host(
      {copy_job(ctx, a.va, a_bytes, host_a.data()), copy_job(ctx, b.va, 2 * kMiB, host_b.data())},
      &error));
  CHECK(ring.pinned_bytes() == 3 * kMiB);
  FakeCudaStats mid = gpu.stats();
  CHECK(mid.pinned_copy_bytes - before.pinned_copy_bytes == a_bytes + 2 * kMiB);
  CHECK(mid.pageable_copy_bytes == before.pageable_copy_bytes);

  std::memset(reinterpret_cast<void*>(a.va), 0, 6 * kMiB);
  std::memset(reinterpret_cast<void*>(b.va), 0, 2 * kMiB);
  REQUIRE(ring.to_device(
      {fill_job(ctx, a.va, a_bytes, host_a.data()), fill_job(ctx, b.va, 2 * kMiB, host_b.data())},
      &error));
  CHECK(holds(a.va, a_bytes, 11));
  CHECK(all_zero(a.va + a_bytes, 4096));
  CHECK(holds(b.va, 2 * kMiB, 12));
}

TEST_CASE("staging ring stops at the first failing chunk and gives its reason", "[staging]") {
  FakeGpu gpu;
  Context ctx = nullptr;
  REQUIRE(gpu.driver().ensure_context(0, &ctx) == kDrvOk);
  DeviceBlock a(gpu.driver(), 8 * kMiB);
  StagingRing ring(gpu.driver(), 1, 1 * kMiB, nullptr);  // one worker: chunks in order
  std::atomic<int> calls{0};
  StagingRing::Job job{ctx, a.va, 8 * kMiB,
                       [&](std::size_t off, char*, std::size_t, std::string* why) {
                         ++calls;
                         if (off == 2 * kMiB) {
                           *why = "spill write failed: no space";
                           return false;
                         }
                         return true;
                       }};
  std::string error;
  CHECK_FALSE(ring.to_host({job}, &error));
  CHECK(error == "spill write failed: no space");
  CHECK(calls == 3);  // nothing after the failing chunk

  gpu.fail("cuMemcpyDtoHAsync_v2", 0, 1);
  StagingRing::Job quiet{ctx, a.va, 1 * kMiB,
                         [](std::size_t, char*, std::size_t, std::string*) { return true; }};
  CHECK_FALSE(ring.to_host({quiet}, &error));
  CHECK_THAT(error, Catch::Contains("copy to host through staging failed"));
}

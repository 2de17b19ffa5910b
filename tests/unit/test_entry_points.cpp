// How lookups pick a substituted entry point: by ABI symbol, or by API name, version and stream
// flags; and how a slot learns the driver's function and refuses a different one.
#include <catch2/catch.hpp>

#include "hooks/entry_points.h"

namespace gpusleep {
namespace {

const EntryPoint kTable[] = {
    {"cuGetProcAddress", "cuGetProcAddress", 11030, 11999, StreamVariant::kAny},
    {"cuGetProcAddress_v2", "cuGetProcAddress", 12000, kNoLimit, StreamVariant::kAny},
    {"cuMemAlloc_v2", "cuMemAlloc", 3020, kNoLimit, StreamVariant::kAny},
    {"cuMemAllocAsync", "cuMemAllocAsync", 11020, kNoLimit, StreamVariant::kLegacy},
    {"cuMemAllocAsync_ptsz", "cuMemAllocAsync", 11020, kNoLimit, StreamVariant::kPerThread},
};

TEST_CASE("entry points are found by their exact ABI symbol only") {
  EntryPointTable t(kTable, 5);
  CHECK(t.by_abi("cuMemAlloc_v2") == 2);
  CHECK(t.by_abi("cuGetProcAddress") == 0);
  CHECK(t.by_abi("cuGetProcAddress_v2") == 1);
  CHECK(t.by_abi("cuMemAlloc") == -1);  // the 32-bit ABI of old
  CHECK(t.by_abi("cuGetExportTable") == -1);
  CHECK(t.by_abi(nullptr) == -1);
}

TEST_CASE("a cuGetProcAddress request picks the ABI of the version asked for") {
  EntryPointTable t(kTable, 5);
  CHECK(t.by_request("cuMemAlloc", 13000, 0) == 2);
  CHECK(t.by_request("cuMemAlloc", 3020, 0) == 2);
  CHECK(t.by_request("cuMemAlloc", 3010, 0) == -1);
  CHECK(t.by_request("cuGetProcAddress", 11030, 0) == 0);
  CHECK(t.by_request("cuGetProcAddress", 11080, 0) == 0);
  CHECK(t.by_request("cuGetProcAddress", 12000, 0) == 1);
  CHECK(t.by_request("cuGetProcAddress", 11020, 0) == -1);
  CHECK(t.by_request("cuDeviceGetName", 13000, 0) == -1);
}

TEST_CASE("stream functions follow the per-thread flag, others ignore it") {
  EntryPointTable t(kTable, 5);
  CHECK(t.by_request("cuMemAllocAsync", 12000, 0) == 3);
  CHECK(t.by_request("cuMemAllocAsync", 12000, 1) == 3);  // legacy stream asked explicitly
  CHECK(t.by_request("cuMemAllocAsync", 12000, kPerThreadStreamFlag) == 4);
  CHECK(t.by_request("cuMemAlloc", 12000, kPerThreadStreamFlag) == 2);
}

TEST_CASE("a slot keeps the first driver function it learns and refuses another") {
  EntryPointTable t(kTable, 5);
  int a = 0;
  int b = 0;
  CHECK(t.real(2) == nullptr);
  CHECK(t.learn(2, &a));
  CHECK(t.learn(2, &a));
  CHECK_FALSE(t.learn(2, &b));
  CHECK(t.real(2) == &a);
  CHECK_FALSE(t.learn(2, nullptr));
  CHECK_FALSE(t.learn(99, &a));
  CHECK(t.real(99) == nullptr);
}

}  // namespace
}  // namespace gpusleep

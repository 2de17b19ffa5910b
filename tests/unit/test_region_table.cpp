// The region table (preload/core/region.h): lookup by address, claims in address order, and the
// waits that keep a free or an unmap from taking a region apart while it moves.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>

#include "core/region.h"

using namespace gpusleep;
using namespace std::chrono_literals;

namespace {

std::shared_ptr<Region> region(std::uint64_t id, DevicePtr va, std::size_t mapped,
                               const std::string& tag = "default") {
  auto r = std::make_shared<Region>();
  r->id = id;
  r->va = va;
  r->size = mapped;
  r->mapped = mapped;
  r->tag = tag;
  return r;
}

}  // namespace

TEST_CASE("a region is found by its start, and by any address inside it for info",
          "[region_table]") {
  RegionTable table;
  table.insert(region(1, 0x10000, 0x1000));
  table.insert(region(2, 0x20000, 0x2000));
  CHECK(table.find(0x10000)->id == 1);
  CHECK(table.find(0x10800) == nullptr);
  CHECK(table.info_containing(0x10fff)->id == 1);
  CHECK_FALSE(table.info_containing(0x11000));
  CHECK_FALSE(table.info_containing(0x0fff));
  CHECK(table.info_containing(0x21fff)->id == 2);
  CHECK_FALSE(table.info_containing(0x22000));
}

TEST_CASE("a claim moves only the selected regions in the given state, in address order",
          "[region_table]") {
  RegionTable table;
  table.insert(region(3, 0x30000, 0x1000, "kv"));
  table.insert(region(1, 0x10000, 0x1000, "kv"));
  table.insert(region(2, 0x20000, 0x1000, "weights"));
  auto kv = [](const Region& r) { return r.tag == "kv"; };
  auto claimed = table.claim(kv, RegionState::kAwake, RegionState::kSleeping);
  REQUIRE(claimed.size() == 2);
  CHECK(claimed[0]->va == 0x10000);
  CHECK(claimed[1]->va == 0x30000);
  CHECK(table.claim(kv, RegionState::kAwake, RegionState::kSleeping).empty());
  table.settle(claimed, RegionState::kAsleep);
  for (const RegionInfo& info : table.snapshot())
    CHECK(info.state == (info.tag == "kv" ? RegionState::kAsleep : RegionState::kAwake));
  CHECK(table.claim(kv, RegionState::kAsleep, RegionState::kWaking).size() == 2);
}

TEST_CASE("removal waits while a region is claimed and goes on once it settles", "[region_table]") {
  RegionTable table;
  table.insert(region(1, 0x10000, 0x1000));
  auto claimed =
      table.claim([](const Region&) { return true; }, RegionState::kAwake, RegionState::kSleeping);
  std::atomic<bool> removed{false};
  std::thread remover([&] { removed = table.remove_when_idle(0x10000) != nullptr; });
  std::this_thread::sleep_for(50ms);
  CHECK_FALSE(removed);
  CHECK(table.find(0x10000) != nullptr);
  table.settle(claimed, RegionState::kAsleep);
  remover.join();
  CHECK(removed);
  CHECK(table.snapshot().empty());
  CHECK(table.remove_when_idle(0x10000) == nullptr);
}

TEST_CASE("remove_when_awake leaves an asleep region in place and says so", "[region_table]") {
  RegionTable table;
  table.insert(region(1, 0x10000, 0x1000));
  table.insert(region(2, 0x20000, 0x1000));
  auto claimed = table.claim([](const Region& r) { return r.id == 1; }, RegionState::kAwake,
                             RegionState::kSleeping);
  table.settle(claimed, RegionState::kAsleep);
  bool asleep = false;
  CHECK(table.remove_when_awake(0x10000, &asleep) == nullptr);
  CHECK(asleep);
  CHECK(table.find(0x10000) != nullptr);
  auto awake = table.remove_when_awake(0x20000, &asleep);
  REQUIRE(awake != nullptr);
  CHECK(awake->id == 2);
  CHECK_FALSE(asleep);
  CHECK(table.remove_when_awake(0x50000, &asleep) == nullptr);
  CHECK_FALSE(asleep);
}

TEST_CASE("with_idle runs on an idle region only, and snapshots copy what it wrote",
          "[region_table]") {
  RegionTable table;
  table.insert(region(1, 0x10000, 0x1000));
  CHECK(table.with_idle(0x10000, [](Region& r) { r.tag = "weights"; }));
  CHECK_FALSE(table.with_idle(0x20000, [](Region&) { FAIL("ran on a missing region"); }));
  auto snap = table.snapshot();
  REQUIRE(snap.size() == 1);
  CHECK(snap[0].tag == "weights");
  CHECK(snap[0].mirror_bytes == 0);
  CHECK_FALSE(snap[0].adopted);
  CHECK(std::string(region_state_name(RegionState::kWaking)) == "waking");
}

// Host tiers: stashes in pageable memory and on disk hold what was put in them and give their
// bytes back to the books when dropped; a refused spill directory leaves no disk tier.
#include <catch2/catch.hpp>

#include <linux/magic.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "core/host_tiers.h"
#include "fake_gpu.h"

using namespace gpusleep;
using namespace gpusleep::test;

TEST_CASE("pageable stash holds its chunks and is counted while it lives", "[host_tiers]") {
  HostBudget budget("", 0, true);
  auto s = Stash::pageable(3 * kMiB, &budget);
  REQUIRE(s != nullptr);
  CHECK(budget.usage().here.pageable == 3 * kMiB);
  std::vector<char> in(kMiB), out(kMiB);
  for (std::size_t i = 0; i < in.size(); ++i)
    in[i] = static_cast<char>(i * 7);
  std::string error;
  REQUIRE(s->put(2 * kMiB, in.data(), kMiB, &error));
  REQUIRE(s->get(2 * kMiB, out.data(), kMiB, &error));
  CHECK(in == out);
  s.reset();
  CHECK(budget.usage().here.pageable == 0);
}

TEST_CASE("disk stashes share one spill file at their offsets", "[host_tiers]") {
  char cwd[4096];
  REQUIRE(getcwd(cwd, sizeof cwd) != nullptr);
  struct statfs fs;
  if (statfs(cwd, &fs) != 0 || fs.f_type == TMPFS_MAGIC) {
    WARN("the build tree is in memory");
    return;
  }
  HostBudget budget("", 0, true);
  std::string error;
  std::shared_ptr<SpillFile> file = SpillFile::create(cwd, 2 * kMiB, &error);
  REQUIRE(file != nullptr);
  auto a = Stash::disk(file, 0, kMiB, &budget);
  auto b = Stash::disk(file, kMiB, kMiB, &budget);
  CHECK(budget.usage().here.spilled == 2 * kMiB);
  std::vector<char> buf_a(kMiB, 'a'), buf_b(kMiB, 'b');
  // Direct I/O wants aligned buffers: copy through page-aligned memory.
  void* aligned = nullptr;
  REQUIRE(posix_memalign(&aligned, 4096, kMiB) == 0);
  std::memcpy(aligned, buf_a.data(), kMiB);
  REQUIRE(a->put(0, static_cast<char*>(aligned), kMiB, &error));
  std::memcpy(aligned, buf_b.data(), kMiB);
  REQUIRE(b->put(0, static_cast<char*>(aligned), kMiB, &error));
  REQUIRE(a->get(0, static_cast<char*>(aligned), kMiB, &error));
  CHECK(std::memcmp(aligned, buf_a.data(), kMiB) == 0);
  REQUIRE(b->get(0, static_cast<char*>(aligned), kMiB, &error));
  CHECK(std::memcmp(aligned, buf_b.data(), kMiB) == 0);
  free(aligned);
  a.reset();
  b.reset();
  CHECK(budget.usage().here.spilled == 0);
}

TEST_CASE("a spill directory in memory is refused with its reason and leaves no disk tier",
          "[host_tiers]") {
  struct statfs fs;
  if (statfs("/dev/shm", &fs) != 0 || fs.f_type != TMPFS_MAGIC) {
    WARN("no tmpfs at /dev/shm");
    return;
  }
  FakeGpu gpu;
  Options o = test_options();
  o.spill_dir = "/dev/shm";
  HostTiers tiers(gpu.driver(), o);
  CHECK(tiers.spill_dir().empty());
  CHECK_THAT(tiers.spill_problem(), Catch::Contains("tmpfs"));
}

namespace {

// A private directory on the build tree's disk, or "" when that is in memory.
struct SpillDir {
  std::string path;
  SpillDir() {
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd) == nullptr) return;
    struct statfs fs;
    if (statfs(cwd, &fs) != 0 || fs.f_type == TMPFS_MAGIC) return;
    std::string tmpl = std::string(cwd) + "/engine-spill-XXXXXX";
    if (mkdtemp(tmpl.data()) != nullptr) path = tmpl;
  }
  ~SpillDir() {
    if (!path.empty()) rmdir(path.c_str());
  }
};

Options tier_options(std::size_t budget, bool pageable, const std::string& spill_dir) {
  Options o = test_options();
  o.host_budget = BudgetSetting{true, false, 0, budget};
  o.pageable = pageable;
  o.spill_dir = spill_dir;
  o.eager_mirrors = false;
  return o;
}

}  // namespace

TEST_CASE("a sleep past the budget keeps the rest in pageable memory and wakes it intact",
          "[host_tiers]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), tier_options(6 * kMiB, true, ""));
  DevicePtr a = must_allocate(engine, 4 * kMiB);
  DevicePtr b = must_allocate(engine, 4 * kMiB);
  DevicePtr c = must_allocate(engine, 3 * kMiB + 100);
  fill(a, 4 * kMiB, 1);
  fill(b, 4 * kMiB, 2);
  fill(c, 3 * kMiB + 100, 3);
  const std::uint64_t used = gpu.used();
  OpResult s = engine.sleep(SleepRequest{});
  REQUIRE(s.ok);
  CHECK(gpu.used() < used);
  CHECK(s.pageable_bytes > 0);
  CHECK(s.spilled_bytes == 0);
  EngineStatus st = engine.status();
  CHECK(st.host.here.pinned <= 6 * kMiB);
  CHECK(st.host.here.pinned + s.pageable_bytes == 4 * kMiB + 4 * kMiB + 3 * kMiB + 4096);
  CHECK(st.host.here.pageable == s.pageable_bytes);
  CHECK(find_tag(st, "default")->pageable_bytes == s.pageable_bytes);
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK(holds(a, 4 * kMiB, 1));
  CHECK(holds(b, 4 * kMiB, 2));
  CHECK(holds(c, 3 * kMiB + 100, 3));
  CHECK(engine.status().host.here.pageable == 0);
}

TEST_CASE("the spill policy and the disk tier write to disk and wake intact", "[host_tiers]") {
  SpillDir dir;
  if (dir.path.empty()) {
    WARN("the build tree is in memory");
    return;
  }
  FakeGpu gpu;
  Options o = tier_options(0, false, dir.path);
  o.policies["scratch"] = Policy::kSpill;
  Engine engine(gpu.driver(), o);
  DevicePtr w = must_allocate(engine, 5 * kMiB + 8);
  REQUIRE(engine.set_phase_tag("scratch"));
  DevicePtr x = must_allocate(engine, 2 * kMiB);
  fill(w, 5 * kMiB + 8, 4);
  fill(x, 2 * kMiB, 5);
  OpResult s = engine.sleep(SleepRequest{});
  REQUIRE(s.ok);
  CHECK(s.spilled_bytes == 5 * kMiB + 4096 + 2 * kMiB);
  CHECK(s.copied_bytes == s.spilled_bytes);
  EngineStatus st = engine.status();
  CHECK(find_tag(st, "scratch")->policy == Policy::kSpill);
  CHECK(find_tag(st, "scratch")->spilled_bytes == 2 * kMiB);
  CHECK(find_tag(st, "scratch")->mirror_bytes == 0);
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK(holds(w, 5 * kMiB + 8, 4));
  CHECK(holds(x, 2 * kMiB, 5));
  CHECK(engine.status().host.here.spilled == 0);
}

TEST_CASE("a disk that fills up during a spill fails the sleep whole: nothing is released",
          "[host_tiers]") {
  SpillDir dir;
  if (dir.path.empty()) {
    WARN("the build tree is in memory");
    return;
  }
  FakeGpu gpu;
  Engine engine(gpu.driver(), tier_options(0, false, dir.path));
  DevicePtr a = must_allocate(engine, 64 * kMiB);
  DevicePtr b = must_allocate(engine, 6 * kMiB);
  fill(a, 64 * kMiB, 6);
  fill(b, 6 * kMiB, 7);
  const std::uint64_t used = gpu.used();
  spill_inject_write_error(2, ENOSPC);
  OpResult s = engine.sleep(SleepRequest{});
  spill_inject_write_error(0, 0);
  CHECK_FALSE(s.ok);
  CHECK(s.error.code == Failure::kHostOutOfMemory);
  CHECK_THAT(s.error.message, Catch::Contains("disk is full"));
  CHECK(s.regions == 0);
  CHECK(gpu.used() == used);
  for (const RegionInfo& r : engine.regions())
    CHECK(r.state == RegionState::kAwake);
  CHECK(holds(a, 64 * kMiB, 6));
  CHECK(holds(b, 6 * kMiB, 7));
  CHECK(engine.status().host.here.spilled == 0);
  REQUIRE(engine.sleep(SleepRequest{}).ok);  // the disk has room again
  REQUIRE(engine.wake(WakeRequest{}).ok);
  CHECK(holds(a, 64 * kMiB, 6));
}

TEST_CASE("a budget smaller than one region, with no other tier, fails the sleep and says why",
          "[host_tiers]") {
  FakeGpu gpu;
  Engine engine(gpu.driver(), tier_options(1 * kMiB, false, ""));
  DevicePtr a = must_allocate(engine, 4 * kMiB);
  fill(a, 4 * kMiB, 8);
  const std::uint64_t used = gpu.used();
  OpResult s = engine.sleep(SleepRequest{});
  CHECK_FALSE(s.ok);
  CHECK(s.error.code == Failure::kHostOutOfMemory);
  CHECK_THAT(s.error.message, Catch::Contains("GPUSLEEP_HOST_BUDGET"));
  CHECK_THAT(s.error.message, Catch::Contains("GPUSLEEP_PAGEABLE=0"));
  CHECK_THAT(s.error.message, Catch::Contains("GPUSLEEP_SPILL_DIR"));
  CHECK(s.error.needed_bytes == 4 * kMiB);
  CHECK(gpu.used() == used);
  CHECK(holds(a, 4 * kMiB, 8));
  CHECK(engine.status().host.here.pinned == 0);
}

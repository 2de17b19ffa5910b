// Host tiers: stashes in pageable memory and on disk hold what was put in them and give their
// bytes back to the books when dropped; a refused spill directory leaves no disk tier.
#include <catch2/catch.hpp>

#include <sys/statfs.h>
#include <linux/magic.h>
#include <unistd.h>

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

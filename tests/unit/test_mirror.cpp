// Mirrors and their preparer: background work queued in a burst all runs, and dropping a mirror
// that holds no host memory involves no helper thread.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <sched.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "core/host_budget.h"
#include "core/mirror.h"
#include "fake_gpu.h"

using namespace gpusleep;
using namespace gpusleep::test;

namespace {

int thread_count() {
  int n = 0;
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return -1;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return n;
}

// Threads of this process whose scheduling policy (field 41 of /proc/self/task/TID/stat) is
// SCHED_IDLE.
int idle_threads() {
  int n = 0;
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return -1;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string path = std::string("/proc/self/task/") + e->d_name + "/stat";
    FILE* f = fopen(path.c_str(), "re");
    if (f == nullptr) continue;
    char buf[1024];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    const char* p = strrchr(buf, ')');
    int field = 2;
    while (p != nullptr && *p && field < 41) {
      if (*p == ' ') ++field;
      ++p;
    }
    if (p != nullptr && field == 41 && atoi(p) == SCHED_IDLE) ++n;
  }
  closedir(d);
  return n;
}

// Waits up to `limit` for `done`; true if it became true.
template <typename Fn>
bool eventually(Fn done, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// The emulated driver, a context for mirrors and the counters as they stood at the start.
struct MirrorTest {
  FakeGpu gpu;
  Context ctx = nullptr;
  FakeCudaStats before{};
  MirrorTest() {
    REQUIRE(gpu.driver().ensure_context(0, &ctx) == kDrvOk);
    before = gpu.stats();
  }
  std::shared_ptr<Mirror> mirror(std::size_t bytes) {
    return std::make_shared<Mirror>(gpu.driver(), bytes, ctx);
  }
  std::size_t registered_since() { return gpu.stats().registered_bytes - before.registered_bytes; }
};

}  // namespace

TEST_CASE_METHOD(MirrorTest,
                 "background preparation queued in a burst all runs once due, without draining",
                 "[mirror]") {
  MirrorPreparer preparer(4, 2, std::chrono::milliseconds(20), nullptr);
  std::vector<std::shared_ptr<Mirror>> mirrors;
  for (int i = 0; i < 12; ++i) {
    mirrors.push_back(mirror(2 * kMiB));
    preparer.submit(mirrors.back(), false);  // only the first submit wakes a helper
  }
  // Queued a second later, behind work already running: still done.
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  mirrors.push_back(mirror(300 * kMiB));
  preparer.submit(mirrors.back(), false);
  CHECK(eventually([&] {
    for (const auto& m : mirrors) {
      if (m->prepared_bytes() != m->bytes()) return false;
    }
    return true;
  }));
  CHECK(registered_since() == 12 * 2 * kMiB + 300 * kMiB);
}

TEST_CASE_METHOD(MirrorTest, "dropping a mirror that holds no host memory starts no helper",
                 "[mirror]") {
  MirrorPreparer preparer(4, 2, std::chrono::milliseconds(20), nullptr);
  auto m = mirror(4 * kMiB);
  std::weak_ptr<Mirror> watch = m;
  const int threads = thread_count();
  REQUIRE(threads > 0);
  CHECK_FALSE(m->holds_memory());
  preparer.release(std::move(m));
  CHECK(watch.expired());  // gone on the caller's thread, at once
  CHECK(thread_count() == threads);
}

TEST_CASE_METHOD(MirrorTest, "a mirror holding pinned memory is unpinned off the caller's thread",
                 "[mirror]") {
  MirrorPreparer preparer(4, 2, std::chrono::milliseconds(20), nullptr);
  auto m = mirror(4 * kMiB);
  std::string error;
  REQUIRE(m->ensure_piece(0, &error));
  REQUIRE(m->holds_memory());
  CHECK(registered_since() == 4 * kMiB);
  preparer.release(std::move(m));
  preparer.drain();
  CHECK(registered_since() == 0);
}

TEST_CASE_METHOD(MirrorTest,
                 "a mirror dropped while a helper prepares it is unpinned once the helper is done",
                 "[mirror]") {
  MirrorPreparer preparer(2, 2, std::chrono::milliseconds(0), nullptr);
  for (int round = 0; round < 20; ++round) {
    auto m = mirror(20 * kMiB);
    preparer.submit(m, true);
    std::this_thread::sleep_for(std::chrono::microseconds(200 * (round % 5)));
    preparer.release(std::move(m));
  }
  preparer.drain();
  CHECK(eventually([&] { return registered_since() == 0; }));
}

TEST_CASE_METHOD(MirrorTest, "a mirror with a budget pins up to it and says so past it",
                 "[mirror]") {
  HostBudget budget("", 6 * kMiB, true);
  auto m = std::make_shared<Mirror>(gpu.driver(), 4 * kMiB, ctx, &budget);
  auto n = std::make_shared<Mirror>(gpu.driver(), 4 * kMiB, ctx, &budget);
  std::string error;
  REQUIRE(m->ensure_piece(0, &error));
  CHECK(budget.usage().here.pinned == 4 * kMiB);
  CHECK_FALSE(n->ensure_piece(0, &error));
  CHECK_THAT(error, Catch::Contains("GPUSLEEP_HOST_BUDGET"));
  CHECK(n->prepared_bytes() == 0);
  CHECK_FALSE(n->reserve_rest());
  m.reset();
  CHECK(budget.usage().here.pinned == 0);
  REQUIRE(n->reserve_rest());
  CHECK(budget.usage().here.pinned == 4 * kMiB);
  REQUIRE(n->ensure_piece(0, &error));  // from its reservation: nothing more taken
  CHECK(budget.usage().here.pinned == 4 * kMiB);
  n.reset();
  CHECK(budget.usage().here.pinned == 0);
}

TEST_CASE_METHOD(MirrorTest, "background preparation stops at the budget and leaves the rest",
                 "[mirror]") {
  HostBudget budget("", 5 * kMiB, true);
  MirrorPreparer preparer(2, 2, std::chrono::milliseconds(0), nullptr);
  std::vector<std::shared_ptr<Mirror>> mirrors;
  for (int i = 0; i < 4; ++i) {
    mirrors.push_back(std::make_shared<Mirror>(gpu.driver(), 2 * kMiB, ctx, &budget));
    preparer.submit(mirrors.back(), false);
  }
  preparer.drain();
  std::size_t prepared = 0;
  for (const auto& m : mirrors)
    prepared += m->prepared_bytes();
  CHECK(prepared == 4 * kMiB);
  CHECK(registered_since() == 4 * kMiB);
}

TEST_CASE_METHOD(MirrorTest, "background preparation waits until allocations have settled",
                 "[mirror]") {
  MirrorPreparer preparer(2, 2, std::chrono::milliseconds(300), nullptr);
  std::vector<std::shared_ptr<Mirror>> mirrors;
  // An allocation every 50 ms for 0.5 s: each restarts the wait, so nothing is pinned meanwhile.
  for (int i = 0; i < 10; ++i) {
    mirrors.push_back(mirror(2 * kMiB));
    preparer.submit(mirrors.back(), false);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK(registered_since() == 0);
  CHECK(eventually([&] { return registered_since() == 20 * kMiB; }));
}

TEST_CASE_METHOD(MirrorTest, "background preparation keeps to its rate, and a drain does not wait",
                 "[mirror]") {
  PrepPacing pacing;
  pacing.rate = 8 * kMiB;  // a second: 32 MiB would take 4 s
  MirrorPreparer preparer(2, 2, std::chrono::milliseconds(0), nullptr, pacing);
  std::vector<std::shared_ptr<Mirror>> mirrors;
  for (int i = 0; i < 16; ++i) {
    mirrors.push_back(mirror(2 * kMiB));
    preparer.submit(mirrors.back(), false);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(registered_since() > 0);
  CHECK(registered_since() <= 12 * kMiB);
  preparer.drain();
  CHECK(registered_since() == 32 * kMiB);
}

TEST_CASE_METHOD(MirrorTest, "background helpers run at idle priority, urgent-only helpers do not",
                 "[mirror]") {
  const int before = idle_threads();
  PrepPacing pacing;
  pacing.priority = PrepPacing::Priority::kIdle;
  MirrorPreparer preparer(3, 1, std::chrono::milliseconds(0), nullptr, pacing);
  auto m = mirror(2 * kMiB);
  preparer.submit(m, false);
  preparer.drain();
  CHECK(m->prepared_bytes() == 2 * kMiB);
  CHECK(eventually([&] { return idle_threads() == before + 1; }));
}

TEST_CASE_METHOD(MirrorTest, "background work queued ahead is prepared before work queued earlier",
                 "[mirror]") {
  HostBudget budget("", 4 * kMiB, true);  // room for two of the three
  MirrorPreparer preparer(1, 1, std::chrono::milliseconds(50), nullptr);
  auto first = std::make_shared<Mirror>(gpu.driver(), 2 * kMiB, ctx, &budget);
  auto second = std::make_shared<Mirror>(gpu.driver(), 2 * kMiB, ctx, &budget);
  auto likely = std::make_shared<Mirror>(gpu.driver(), 2 * kMiB, ctx, &budget);
  preparer.submit(first, false);
  preparer.submit(second, false);
  preparer.submit(likely, false, true);
  preparer.drain();
  CHECK(likely->prepared_bytes() == 2 * kMiB);
  CHECK(first->prepared_bytes() == 2 * kMiB);
  CHECK(second->prepared_bytes() == 0);
}

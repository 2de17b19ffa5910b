// Mirrors and their preparer: background work queued in a burst all runs, and dropping a mirror
// that holds no host memory involves no helper thread.
#include <catch2/catch.hpp>

#include <dirent.h>

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "fake_gpu.h"
#include "core/mirror.h"

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

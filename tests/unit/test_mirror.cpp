// Mirrors and their preparer: background work queued in a burst all runs, and dropping a mirror
// that holds no host memory involves no helper thread.
#include <catch2/catch.hpp>

#include <dirent.h>

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "fake_gpu.h"
#include "mirror.h"

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

Context context_of(FakeGpu& gpu) {
  Context ctx = nullptr;
  REQUIRE(gpu.driver().ensure_context(0, &ctx) == kDrvOk);
  return ctx;
}

}  // namespace

TEST_CASE("background preparation queued in a burst all runs once due, without draining",
          "[mirror]") {
  FakeGpu gpu;
  const Context ctx = context_of(gpu);
  const FakeCudaStats before = gpu.stats();
  MirrorPreparer preparer(4, 2, std::chrono::milliseconds(20), nullptr);
  std::vector<std::shared_ptr<Mirror>> mirrors;
  for (int i = 0; i < 12; ++i) {
    mirrors.push_back(std::make_shared<Mirror>(gpu.driver(), 2 * kMiB, ctx));
    preparer.submit(mirrors.back(), false);  // only the first submit wakes a helper
  }
  // Queued a second later, behind work already running: still done.
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  mirrors.push_back(std::make_shared<Mirror>(gpu.driver(), 300 * kMiB, ctx));
  preparer.submit(mirrors.back(), false);
  CHECK(eventually([&] {
    for (const auto& m : mirrors) {
      if (m->prepared_bytes() != m->bytes()) return false;
    }
    return true;
  }));
  CHECK(gpu.stats().registered_bytes - before.registered_bytes == 12 * 2 * kMiB + 300 * kMiB);
}

TEST_CASE("dropping a mirror that holds no host memory starts no helper", "[mirror]") {
  FakeGpu gpu;
  const Context ctx = context_of(gpu);
  MirrorPreparer preparer(4, 2, std::chrono::milliseconds(20), nullptr);
  auto mirror = std::make_shared<Mirror>(gpu.driver(), 4 * kMiB, ctx);
  std::weak_ptr<Mirror> watch = mirror;
  const int threads = thread_count();
  REQUIRE(threads > 0);
  CHECK_FALSE(mirror->holds_memory());
  preparer.release(std::move(mirror));
  CHECK(watch.expired());  // gone on the caller's thread, at once
  CHECK(thread_count() == threads);
}

TEST_CASE("a mirror holding pinned memory is unpinned off the caller's thread", "[mirror]") {
  FakeGpu gpu;
  const Context ctx = context_of(gpu);
  const FakeCudaStats before = gpu.stats();
  MirrorPreparer preparer(4, 2, std::chrono::milliseconds(20), nullptr);
  auto mirror = std::make_shared<Mirror>(gpu.driver(), 4 * kMiB, ctx);
  std::string error;
  REQUIRE(mirror->ensure_piece(0, &error));
  REQUIRE(mirror->holds_memory());
  CHECK(gpu.stats().registered_bytes - before.registered_bytes == 4 * kMiB);
  preparer.release(std::move(mirror));
  preparer.drain();
  CHECK(gpu.stats().registered_bytes == before.registered_bytes);
}

TEST_CASE("a mirror dropped while a helper prepares it is unpinned once the helper is done",
          "[mirror]") {
  FakeGpu gpu;
  const Context ctx = context_of(gpu);
  const FakeCudaStats before = gpu.stats();
  MirrorPreparer preparer(2, 2, std::chrono::milliseconds(0), nullptr);
  for (int round = 0; round < 20; ++round) {
    auto mirror = std::make_shared<Mirror>(gpu.driver(), 20 * kMiB, ctx);
    preparer.submit(mirror, true);
    std::this_thread::sleep_for(std::chrono::microseconds(200 * (round % 5)));
    preparer.release(std::move(mirror));
  }
  preparer.drain();
  CHECK(eventually([&] { return gpu.stats().registered_bytes == before.registered_bytes; }));
}

// The staging ring. Workers take chunks from one shared counter, so a slow chunk (a write that
// waits on the disk) holds back only its own worker; each worker owns its buffer and a stream per
// context, so no chunk waits on another's copy.
#include "core/staging.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "base/threads.h"

namespace gpusleep {

StagingRing::StagingRing(Driver& driver, int workers, std::size_t chunk_bytes,
                         std::function<void()> thread_init)
    : driver_(driver),
      workers_(std::max(1, workers)),
      chunk_(std::max<std::size_t>(4096, chunk_bytes & ~std::size_t{4095})),
      thread_init_(std::move(thread_init)) {}

StagingRing::~StagingRing() {
  if (mapping_ == nullptr) return;
  driver_.set_context(pinned_ctx_);
  for (char* b : buffers_)
    driver_.host_unregister(b);
  munmap(mapping_, chunk_ * workers_);
}

bool StagingRing::pin(std::string* error) {
  if (mapping_ != nullptr) return true;
  const std::size_t total = chunk_ * workers_;
  void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    *error = std::string("cannot map staging buffers: ") + strerror(errno);
    return false;
  }
  driver_.current_context(&pinned_ctx_);
  std::vector<char*> pinned;
  for (int w = 0; w < workers_; ++w) {
    char* b = static_cast<char*>(p) + chunk_ * w;
    std::memset(b, 0, chunk_);
    if (DrvStatus rc = driver_.host_register(b, chunk_)) {
      *error = "cannot pin staging buffers: " + driver_.describe(rc);
      for (char* q : pinned)
        driver_.host_unregister(q);
      munmap(p, total);
      return false;
    }
    pinned.push_back(b);
  }
  mapping_ = p;
  buffers_ = std::move(pinned);
  return true;
}

bool StagingRing::to_host(const std::vector<Job>& jobs, std::string* error) {
  return run(jobs, true, error);
}

bool StagingRing::to_device(const std::vector<Job>& jobs, std::string* error) {
  return run(jobs, false, error);
}

bool StagingRing::run(const std::vector<Job>& jobs, bool to_host, std::string* error) {
  struct Chunk {
    std::size_t job;
    std::size_t offset;
    std::size_t n;
  };
  std::vector<Chunk> chunks;
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    for (std::size_t off = 0; off < jobs[j].bytes; off += chunk_)
      chunks.push_back(Chunk{j, off, std::min(chunk_, jobs[j].bytes - off)});
  }
  if (chunks.empty()) return true;
  if (!pin(error)) return false;

  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mu;
  std::string first_error;
  auto fail = [&](std::string why) {
    std::lock_guard<std::mutex> lock(error_mu);
    if (!failed.exchange(true)) first_error = std::move(why);
  };
  auto work = [&](int w) {
    char* buf = buffers_[w];
    std::map<Context, Stream> streams;
    for (std::size_t i = next++; i < chunks.size() && !failed.load(); i = next++) {
      const Chunk& c = chunks[i];
      const Job& job = jobs[c.job];
      DrvStatus rc = driver_.set_context(job.ctx);
      Stream& s = streams[job.ctx];
      if (rc == kDrvOk && s == nullptr) rc = driver_.stream_create(&s);
      std::string why;
      if (rc == kDrvOk && !to_host && !job.move(c.offset, buf, c.n, &why)) {
        fail(why);
        break;
      }
      if (rc == kDrvOk) {
        rc = to_host ? driver_.copy_to_host(buf, job.dev + c.offset, c.n, s)
                     : driver_.copy_to_device(job.dev + c.offset, buf, c.n, s);
      }
      if (rc == kDrvOk) rc = driver_.stream_synchronize(s);
      if (rc != kDrvOk) {
        fail(std::string(to_host ? "copy to host" : "copy to device") +
             " through staging failed: " + driver_.describe(rc));
        break;
      }
      if (to_host && !job.move(c.offset, buf, c.n, &why)) {
        fail(why);
        break;
      }
    }
    for (auto& [ctx, s] : streams) {
      if (s == nullptr) continue;
      driver_.set_context(ctx);
      driver_.stream_destroy(s);
    }
  };
  const int n = static_cast<int>(std::min<std::size_t>(workers_, chunks.size()));
  std::vector<std::thread> threads;
  for (int w = 1; w < n; ++w) {
    threads.push_back(start_quiet_thread([&, w] {
      if (thread_init_) thread_init_();
      work(w);
    }));
  }
  work(0);  // the caller is a worker too
  for (auto& t : threads)
    t.join();
  if (failed.load()) *error = first_error;
  return !failed.load();
}

}  // namespace gpusleep

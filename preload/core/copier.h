// Bulk copies between regions and their mirrors, split in chunks over several streams per context.
#pragma once

#include <cstddef>
#include <map>
#include <utility>
#include <vector>

#include "driver/driver.h"

namespace gpusleep {

enum class Direction { kToHost, kToDevice };

// Not thread-safe: one sleep or wake uses it at a time.
class Copier {
 public:
  // A point in the queued copies: reached once everything queued before it has completed.
  using Fence = std::vector<std::pair<Context, Event>>;

  Copier(Driver& driver, int streams_per_context, std::size_t chunk_bytes);
  ~Copier();
  Copier(const Copier&) = delete;
  Copier& operator=(const Copier&) = delete;

  // Queues a copy of `bytes` between `host` (registered memory) and `dev` in context `ctx`, in
  // chunks spread over the context's streams. Makes `ctx` current on the calling thread. Returns
  // the first failure to queue; copies queued before it still run.
  DrvStatus issue(Context ctx, Direction direction, void* host, DevicePtr dev, std::size_t bytes);
  // Marks everything queued so far.
  DrvStatus fence(Fence* out);
  // Waits for a fence and releases it: the first error of the copies before it, if any.
  DrvStatus wait(Fence* fence);
  // Releases a fence without waiting for it.
  void drop(Fence* fence);
  // Waits for every copy queued since the last wait(). Returns the first error seen in issue() or
  // while waiting.
  DrvStatus wait();

 private:
  struct ContextStreams {
    std::vector<Stream> streams;
    std::vector<char> since_fence;  // per stream: work queued since the last fence
    std::size_t next = 0;
    bool used = false;
  };

  Driver& driver_;
  const int streams_per_context_;
  const std::size_t chunk_;
  std::map<Context, ContextStreams> contexts_;
  DrvStatus first_error_ = kDrvOk;
};

}  // namespace gpusleep

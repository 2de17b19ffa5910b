// Bulk copies between regions and their mirrors, split in chunks over several streams per context.
#pragma once

#include <cstddef>
#include <map>
#include <vector>

#include "driver.h"

namespace gpusleep {

enum class Direction { kToHost, kToDevice };

// Not thread-safe: one sleep or wake uses it at a time.
class Copier {
 public:
  Copier(Driver& driver, int streams_per_context, std::size_t chunk_bytes);
  ~Copier();
  Copier(const Copier&) = delete;
  Copier& operator=(const Copier&) = delete;

  // Queues a copy of `bytes` between `host` (registered memory) and `dev` in context `ctx`, in
  // chunks spread over the context's streams. Makes `ctx` current on the calling thread. Returns
  // the first failure to queue; copies queued before it still run.
  DrvStatus issue(Context ctx, Direction direction, void* host, DevicePtr dev, std::size_t bytes);
  // Waits for every copy queued since the last wait. Returns the first error seen in issue() or
  // while waiting.
  DrvStatus wait();

 private:
  struct ContextStreams {
    std::vector<Stream> streams;
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

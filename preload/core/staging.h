// Copies between device memory and memory the copy engines cannot reach at full speed (pageable
// host memory, a spill file), through a ring of small pinned buffers: each worker copies a chunk
// into its buffer and hands it on (memcpy, write) while the other workers' chunks cross the link.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "driver/driver.h"

namespace gpusleep {

class StagingRing {
 public:
  // Moves the bytes of one chunk at `offset` within a job between the pinned buffer `data` and
  // where the job keeps them. Returns false with the reason in *error.
  using ChunkFn =
      std::function<bool(std::size_t offset, char* data, std::size_t n, std::string* error)>;

  struct Job {
    Context ctx = nullptr;
    DevicePtr dev = 0;
    std::size_t bytes = 0;
    ChunkFn move;  // to host: takes the chunk from `data`; to device: fills `data`
  };

  // `workers` threads each with one pinned buffer of `chunk_bytes` (a multiple of 4096), pinned
  // by the first call and unpinned by the destructor. Each worker runs `thread_init` first.
  StagingRing(Driver& driver, int workers, std::size_t chunk_bytes,
              std::function<void()> thread_init);
  ~StagingRing();
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;

  // Copies every job's device bytes out through the ring (device → buffer → job.move). Returns
  // when all is done or the first failure stopped it (false, the reason in *error); no chunk of a
  // job is in flight when it returns. Not reentrant: one call at a time.
  bool to_host(const std::vector<Job>& jobs, std::string* error);
  // The other way: job.move fills the buffer, which is then copied to the device.
  bool to_device(const std::vector<Job>& jobs, std::string* error);

  std::size_t pinned_bytes() const { return buffers_.size() * chunk_; }

 private:
  bool run(const std::vector<Job>& jobs, bool to_host, std::string* error);
  bool pin(std::string* error);

  Driver& driver_;
  const int workers_;
  const std::size_t chunk_;
  const std::function<void()> thread_init_;
  Context pinned_ctx_ = nullptr;  // current while the buffers were registered
  void* mapping_ = nullptr;
  std::vector<char*> buffers_;
};

}  // namespace gpusleep

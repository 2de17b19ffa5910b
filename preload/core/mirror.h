// Host mirrors: pinned host copies of offloaded regions, kept across sleep/wake cycles. A mirror is
// prepared (populated with transparent huge pages and registered) in pieces, so preparation runs
// on several threads and a sleep can copy into the pieces already prepared while others are not.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "driver/driver.h"

namespace gpusleep {

// Bytes of MemAvailable in /proc/meminfo; SIZE_MAX when it cannot be read.
std::size_t host_available_bytes();

class Mirror {
 public:
  static constexpr std::size_t kPieceBytes = std::size_t{256} << 20;

  // Describes a mirror of `bytes` bytes; takes no memory until a piece is prepared. Pinning needs
  // a current context: the threads that prepare or free the mirror make `ctx` current.
  Mirror(Driver& driver, std::size_t bytes, Context ctx);
  // Unregisters the prepared pieces and returns the memory.
  ~Mirror();
  Mirror(const Mirror&) = delete;
  Mirror& operator=(const Mirror&) = delete;

  std::size_t bytes() const { return bytes_; }
  std::size_t piece_count() const { return pieces_.size(); }
  std::size_t piece_offset(std::size_t i) const { return i * kPieceBytes; }
  std::size_t piece_size(std::size_t i) const;

  // Makes piece `i` ready for copies. Does the work on the calling thread unless another thread is
  // already doing it, in which case it waits for that. Returns false with the reason in *error if
  // host memory could not be mapped, populated or registered; a later call tries again.
  bool ensure_piece(std::size_t i, std::string* error);
  bool piece_ready(std::size_t i) const;
  // Host address of byte `offset`. Precondition: the piece holding it is ready.
  char* at(std::size_t offset) const { return base_ + offset; }
  // Bytes of the pieces that are ready.
  std::size_t prepared_bytes() const { return prepared_bytes_.load(); }
  // Whether host memory has been mapped for it (dropping one that has not costs nothing).
  bool holds_memory() const;
  // Marks the mirror as no longer wanted: queued preparation skips it.
  void abandon() { abandoned_ = true; }
  bool abandoned() const { return abandoned_.load(); }

 private:
  enum PieceState : int { kEmpty = 0, kPreparing = 1, kReady = 2 };

  bool map_address_space(std::string* error);
  bool prepare(std::size_t i, std::string* error);

  Driver& driver_;
  const std::size_t bytes_;
  const Context ctx_;
  std::vector<std::atomic<int>> pieces_;
  std::atomic<std::size_t> prepared_bytes_{0};
  std::atomic<bool> abandoned_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  char* base_ = nullptr;     // 2 MiB aligned, set once under mu_
  void* mapping_ = nullptr;  // what mmap returned
  std::size_t mapping_bytes_ = 0;
};

// Helper threads that prepare mirror pieces ahead of the copies that need them, and free mirrors
// off the caller's thread (unpinning gigabytes takes tens of milliseconds).
class MirrorPreparer {
 public:
  // `threads` helpers (started on first use); background work occupies at most
  // `background_threads` of them at once so the host keeps its CPUs, and starts only
  // `background_delay` after it is queued, so short-lived allocations are never pinned. Each
  // helper runs `thread_init` first.
  MirrorPreparer(int threads, int background_threads, std::chrono::milliseconds background_delay,
                 std::function<void()> thread_init);
  // Frees the mirrors still queued for release; drops queued preparation.
  ~MirrorPreparer();

  // Queues the pieces of `mirror` that are not ready. Urgent work runs before any background work.
  // Background pieces are skipped when host memory is short (the sleep that needs them prepares
  // them and reports the shortage).
  void submit(const std::shared_ptr<Mirror>& mirror, bool urgent);
  // Drops the caller's reference to `mirror`: at once when it holds no host memory, else on a
  // helper thread.
  void release(std::shared_ptr<Mirror> mirror);
  // Waits until nothing is queued or running, running delayed background work at once (tests,
  // benchmarks).
  void drain();

 private:
  struct Job {
    std::weak_ptr<Mirror> mirror;
    std::size_t piece;
    std::chrono::steady_clock::time_point ready_at;
  };
  void start_locked();
  void run();
  bool idle_locked() const;

  const int threads_;
  const int background_threads_;
  const std::chrono::milliseconds background_delay_;
  const std::function<void()> thread_init_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_;
  std::deque<Job> urgent_;
  std::deque<Job> background_;
  std::deque<std::shared_ptr<Mirror>> releases_;
  int running_background_ = 0;
  int busy_ = 0;
  int draining_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace gpusleep

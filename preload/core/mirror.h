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

class HostBudget;

// Bytes of MemAvailable in /proc/meminfo; SIZE_MAX when it cannot be read.
std::size_t host_available_bytes();

class Mirror {
 public:
  static constexpr std::size_t kPieceBytes = std::size_t{256} << 20;

  // Describes a mirror of `bytes` bytes; takes no memory until a piece is prepared. Pinning needs
  // a current context: the threads that prepare or free the mirror make `ctx` current. With a
  // `budget` (which must outlive the mirror), each piece is reserved from it before it is pinned.
  Mirror(Driver& driver, std::size_t bytes, Context ctx, HostBudget* budget = nullptr);
  // Unregisters the prepared pieces, returns the memory and gives its bytes back to the budget.
  ~Mirror();
  Mirror(const Mirror&) = delete;
  Mirror& operator=(const Mirror&) = delete;

  std::size_t bytes() const { return bytes_; }
  std::size_t piece_count() const { return pieces_.size(); }
  std::size_t piece_offset(std::size_t i) const { return i * kPieceBytes; }
  std::size_t piece_size(std::size_t i) const;

  // Makes piece `i` ready for copies. Does the work on the calling thread unless another thread is
  // already doing it, in which case it waits for that. Returns false with the reason in *error if
  // host memory could not be mapped, populated or registered, or the budget has no room for it;
  // a later call tries again.
  bool ensure_piece(std::size_t i, std::string* error);
  // Reserves from the budget every byte not yet prepared or reserved, so that ensure_piece() no
  // longer needs the budget. False (nothing reserved) when the budget has no room.
  bool reserve_rest();
  // Gives back to the budget what reserve_rest() reserved and no piece has used yet.
  void unreserve();
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
  HostBudget* const budget_;
  std::size_t reserved_ = 0;  // reserved from the budget, not yet prepared; guarded by mu_
  mutable std::mutex mu_;
  std::condition_variable cv_;
  char* base_ = nullptr;     // 2 MiB aligned, set once under mu_
  void* mapping_ = nullptr;  // what mmap returned
  std::size_t mapping_bytes_ = 0;
};

// How background preparation keeps out of the program's way.
struct PrepPacing {
  enum class Priority { kNormal, kNice, kIdle };
  Priority priority = Priority::kNormal;  // of background helpers: SCHED_IDLE, nice 19, as is
  std::size_t rate = 0;  // background bytes a second, all helpers together; 0: no bound
};

// Helper threads that prepare mirror pieces ahead of the copies that need them, and free mirrors
// off the caller's thread (unpinning gigabytes takes tens of milliseconds).
class MirrorPreparer {
 public:
  // `threads` helpers (started on first use). Background work runs only on the first
  // `background_threads` of them (at idle priority when `pacing` says so, so the host keeps its
  // CPUs; the others take urgent work only), only once no background work was queued for
  // `background_delay` (the program's allocations have settled: short-lived allocations are
  // never pinned), and no faster than `pacing.rate`. Each helper runs `thread_init` first.
  MirrorPreparer(int threads, int background_threads, std::chrono::milliseconds background_delay,
                 std::function<void()> thread_init, PrepPacing pacing = {});
  // Frees the mirrors still queued for release; drops queued preparation.
  ~MirrorPreparer();

  // Queues the pieces of `mirror` that are not ready. Urgent work runs before any background work.
  // Background pieces are skipped when host memory is short (the sleep that needs them prepares
  // them and reports the shortage). `ahead`: background work that goes before the background work
  // already queued (a sleep is likely to need it first).
  void submit(const std::shared_ptr<Mirror>& mirror, bool urgent, bool ahead = false);
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
  };
  void start_locked();
  void run(int index);
  bool idle_locked() const;

  const int threads_;
  const int background_threads_;
  const std::chrono::milliseconds background_delay_;
  const std::function<void()> thread_init_;
  const PrepPacing pacing_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_;
  std::deque<Job> urgent_;
  std::deque<Job> background_;
  std::deque<std::shared_ptr<Mirror>> releases_;
  int running_background_ = 0;
  // Background work waits for both: the program's allocations settling, and the rate.
  std::chrono::steady_clock::time_point quiet_at_{};
  std::chrono::steady_clock::time_point paced_at_{};
  int busy_ = 0;
  int draining_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace gpusleep

// Mirror preparation. Registration of 4 KiB pages runs near 3 GB/s whatever the thread count;
// with transparent huge pages, populated first, several threads reach about 28 GB/s on the H100
// host, so mirrors are 2 MiB aligned, advised huge, and populated before registering. Pages are
// populated by touching them: MADV_POPULATE_WRITE ran at 0.8 GB/s where touching ran at 16 GB/s
// (two threads, huge pages, kernel 6.18).
#include "core/mirror.h"

#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "base/log.h"
#include "base/threads.h"
#include "core/host_budget.h"

namespace gpusleep {
namespace {
constexpr std::size_t kHugePage = std::size_t{2} << 20;
constexpr std::size_t kBackgroundReserve = std::size_t{4} << 30;  // host memory left untouched

// Faults in every page (a huge page on the first touch where the kernel gives one). The caller
// has checked that the host has the memory.
void populate(char* p, std::size_t n) {
  volatile char* v = p;
  for (std::size_t off = 0; off < n; off += 4096)
    v[off] = 0;
}
}  // namespace

std::size_t host_available_bytes() {
  FILE* f = std::fopen("/proc/meminfo", "re");
  if (f == nullptr) return std::numeric_limits<std::size_t>::max();
  char line[256];
  std::size_t result = std::numeric_limits<std::size_t>::max();
  while (std::fgets(line, sizeof line, f) != nullptr) {
    unsigned long long kib = 0;
    if (std::sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
      result = static_cast<std::size_t>(kib) * 1024;
      break;
    }
  }
  std::fclose(f);
  return result;
}

Mirror::Mirror(Driver& driver, std::size_t bytes, Context ctx, HostBudget* budget)
    : driver_(driver),
      bytes_(bytes),
      ctx_(ctx),
      pieces_((bytes + kPieceBytes - 1) / kPieceBytes),
      budget_(budget) {}

Mirror::~Mirror() {
  if (prepared_bytes_.load() > 0) driver_.set_context(ctx_);
  for (std::size_t i = 0; i < pieces_.size(); ++i) {
    if (pieces_[i].load() == kReady) driver_.host_unregister(at(piece_offset(i)));
  }
  if (mapping_ != nullptr) munmap(mapping_, mapping_bytes_);
  if (budget_ != nullptr) budget_->release_pinned(prepared_bytes_.load() + reserved_);
}

void Mirror::unreserve() {
  std::lock_guard<std::mutex> lock(mu_);
  if (budget_ != nullptr && reserved_ > 0) budget_->release_pinned(reserved_);
  reserved_ = 0;
}

bool Mirror::reserve_rest() {
  std::lock_guard<std::mutex> lock(mu_);
  std::size_t empty = 0;
  for (std::size_t i = 0; i < pieces_.size(); ++i) {
    if (pieces_[i].load() == kEmpty) empty += piece_size(i);
  }
  if (empty <= reserved_) return true;
  if (budget_ != nullptr && !budget_->reserve_pinned(empty - reserved_)) return false;
  reserved_ = empty;
  return true;
}

std::size_t Mirror::piece_size(std::size_t i) const {
  std::size_t off = piece_offset(i);
  return std::min(kPieceBytes, bytes_ - off);
}

bool Mirror::piece_ready(std::size_t i) const {
  return pieces_[i].load() == kReady;
}

bool Mirror::holds_memory() const {
  std::lock_guard<std::mutex> lock(mu_);
  return base_ != nullptr;
}

bool Mirror::map_address_space(std::string* error) {
  // Caller holds mu_.
  if (base_ != nullptr) return true;
  std::size_t len = bytes_ + kHugePage;
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) {
    *error = "cannot map " + std::to_string(bytes_) + " bytes of host memory: " + strerror(errno);
    return false;
  }
  auto addr = reinterpret_cast<std::uintptr_t>(p);
  auto aligned = (addr + kHugePage - 1) & ~(kHugePage - 1);
  madvise(reinterpret_cast<void*>(aligned), bytes_, MADV_HUGEPAGE);
  mapping_ = p;
  mapping_bytes_ = len;
  base_ = reinterpret_cast<char*>(aligned);
  return true;
}

bool Mirror::prepare(std::size_t i, std::string* error) {
  char* p = at(piece_offset(i));
  std::size_t n = piece_size(i);
  populate(p, n);
  DrvStatus rc = driver_.set_context(ctx_);
  if (rc == kDrvOk) rc = driver_.host_register(p, n);
  if (rc != kDrvOk) {
    *error = "cannot pin host memory: " + driver_.describe(rc);
    // Give the pages back; the mapping stays for the next attempt.
    madvise(p, n, MADV_DONTNEED);
    return false;
  }
  return true;
}

bool Mirror::ensure_piece(std::size_t i, std::string* error) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    int state = pieces_[i].load();
    if (state == kReady) return true;
    if (state == kEmpty) break;
    cv_.wait(lock);
  }
  if (!map_address_space(error)) return false;
  const std::size_t n = piece_size(i);
  if (reserved_ >= n) {
    reserved_ -= n;
  } else if (budget_ != nullptr && !budget_->reserve_pinned(n)) {
    *error = "the host budget (" + std::to_string(budget_->limit()) +
             " bytes for the node, GPUSLEEP_HOST_BUDGET) has no room for " + std::to_string(n) +
             " more bytes";
    return false;
  }
  pieces_[i].store(kPreparing);
  lock.unlock();
  bool ok = prepare(i, error);
  lock.lock();
  pieces_[i].store(ok ? kReady : kEmpty);
  if (ok) {
    prepared_bytes_ += n;
  } else if (budget_ != nullptr) {
    budget_->release_pinned(n);
  }
  cv_.notify_all();
  return ok;
}

MirrorPreparer::MirrorPreparer(int threads, int background_threads,
                               std::chrono::milliseconds background_delay,
                               std::function<void()> thread_init, PrepPacing pacing)
    : threads_(std::max(1, threads)),
      background_threads_(std::max(1, std::min(background_threads, threads))),
      background_delay_(background_delay),
      thread_init_(std::move(thread_init)),
      pacing_(pacing) {}

MirrorPreparer::~MirrorPreparer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_)
    t.join();
  releases_.clear();
}

void MirrorPreparer::start_locked() {
  if (!workers_.empty()) return;
  for (int i = 0; i < threads_; ++i)
    workers_.push_back(start_quiet_thread([this, i] { run(i); }));
}

void MirrorPreparer::submit(const std::shared_ptr<Mirror>& mirror, bool urgent, bool ahead) {
  std::lock_guard<std::mutex> lock(mu_);
  start_locked();
  if (!urgent) quiet_at_ = std::chrono::steady_clock::now() + background_delay_;
  const bool background_was_empty = background_.empty();
  if (!urgent && ahead) {
    for (std::size_t i = mirror->piece_count(); i-- > 0;) {
      if (!mirror->piece_ready(i)) background_.push_front(Job{mirror, i});
    }
  } else {
    for (std::size_t i = 0; i < mirror->piece_count(); ++i) {
      if (mirror->piece_ready(i)) continue;
      (urgent ? urgent_ : background_).push_back(Job{mirror, i});
    }
  }
  // Urgent work wants every helper. Background work is not due for a while: the background
  // helpers keep the time, and each helper that takes a job wakes the others while work is left.
  // They already keep the time of the jobs queued before, so only an empty queue needs them
  // woken: a burst of allocations wakes no thread after the first.
  if (urgent || background_was_empty) cv_.notify_all();
}

void MirrorPreparer::release(std::shared_ptr<Mirror> mirror) {
  if (mirror == nullptr) return;
  mirror->abandon();
  // Nothing mapped yet: dropping it here costs nothing. A helper that maps it from now on holds
  // its own reference, so the last one, and the unpinning, fall on that helper.
  if (!mirror->holds_memory()) return;
  std::lock_guard<std::mutex> lock(mu_);
  start_locked();
  releases_.push_back(std::move(mirror));
  cv_.notify_one();
}

bool MirrorPreparer::idle_locked() const {
  return urgent_.empty() && background_.empty() && releases_.empty() && busy_ == 0;
}

void MirrorPreparer::drain() {
  std::unique_lock<std::mutex> lock(mu_);
  ++draining_;
  cv_.notify_all();
  idle_cv_.wait(lock, [this] { return idle_locked(); });
  --draining_;
}

void MirrorPreparer::run(int index) {
  if (thread_init_) thread_init_();
  // Helpers past the background ones take urgent work only, at the priority they were born with.
  const bool background_helper = index < background_threads_;
  if (background_helper && pacing_.priority == PrepPacing::Priority::kIdle) {
    sched_param param{};
    if (sched_setscheduler(0, SCHED_IDLE, &param) != 0) {
      GS_DEBUG("mirror helper: SCHED_IDLE refused (%s); nice 19 instead", strerror(errno));
      setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 19);
    }
  } else if (background_helper && pacing_.priority == PrepPacing::Priority::kNice) {
    setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 19);
  }
  std::unique_lock<std::mutex> lock(mu_);
  auto due_at = [this] { return std::max(quiet_at_, paced_at_); };
  auto background_due = [&] {
    return background_helper && !background_.empty() && running_background_ < background_threads_ &&
           (draining_ > 0 || due_at() <= std::chrono::steady_clock::now());
  };
  for (;;) {
    if (stop_) return;
    // Jobs for mirrors already gone (regions freed before their preparation was due) need neither
    // a helper nor their due time.
    while (!urgent_.empty() && urgent_.front().mirror.expired())
      urgent_.pop_front();
    while (!background_.empty() && background_.front().mirror.expired())
      background_.pop_front();
    if (!releases_.empty()) {
      std::shared_ptr<Mirror> mirror = std::move(releases_.front());
      releases_.pop_front();
      ++busy_;
      lock.unlock();
      mirror.reset();  // unpins and unmaps, unless a preparation job still holds it
      lock.lock();
      --busy_;
    } else if (!urgent_.empty() || background_due()) {
      bool urgent = !urgent_.empty();
      Job job = urgent ? urgent_.front() : background_.front();
      (urgent ? urgent_ : background_).pop_front();
      ++busy_;
      if (!urgent) {
        ++running_background_;
        if (pacing_.rate > 0 && draining_ == 0) {
          auto m = job.mirror.lock();
          const double seconds =
              m ? static_cast<double>(m->piece_size(job.piece)) / static_cast<double>(pacing_.rate)
                : 0.0;
          paced_at_ = std::max(paced_at_, std::chrono::steady_clock::now()) +
                      std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                          std::chrono::duration<double>(seconds));
        }
      }
      if (!urgent_.empty()) {
        cv_.notify_one();
      } else if (!background_.empty()) {
        cv_.notify_all();  // only background helpers take it
      }
      lock.unlock();
      if (auto mirror = job.mirror.lock(); mirror && !mirror->abandoned()) {
        std::size_t need = mirror->piece_size(job.piece) + kBackgroundReserve;
        if (urgent || host_available_bytes() >= need) {
          std::string error;
          if (!mirror->ensure_piece(job.piece, &error)) {
            GS_DEBUG("mirror piece not prepared ahead: %s", error.c_str());
          }
        }
      }
      lock.lock();
      --busy_;
      if (!urgent) --running_background_;
    } else {
      if (idle_locked()) idle_cv_.notify_all();
      if (background_helper && !background_.empty() && running_background_ < background_threads_) {
        cv_.wait_until(lock, due_at());
      } else {
        cv_.wait(lock);
      }
      continue;
    }
    // This helper goes on to the next job itself; others were woken as jobs were taken.
    if (idle_locked()) idle_cv_.notify_all();
  }
}

}  // namespace gpusleep

// The gate (gate.h): thread slots, closing with an asymmetric barrier, waiting, waking on demand.
#include "core/gate.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "base/log.h"
#include "base/threads.h"

namespace gpusleep {

namespace gate_detail {
thread_local GateSlot* t_slot __attribute__((tls_model("initial-exec"))) = nullptr;
}  // namespace gate_detail

namespace {

using Clock = std::chrono::steady_clock;

thread_local bool t_exiting = false;

// Gives the thread's slot back when the thread exits.
struct SlotOwner {
  std::mutex* registry_mu = nullptr;
  GateSlot* slot = nullptr;
  ~SlotOwner() {
    t_exiting = true;
    gate_detail::t_slot = nullptr;
    if (slot == nullptr) return;
    std::lock_guard<std::mutex> lock(*registry_mu);
    slot->call.store(nullptr, std::memory_order_release);
    slot->in_use = false;
  }
};
thread_local SlotOwner t_owner;

bool register_membarrier() {
  long commands = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  if (commands < 0 || (commands & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return false;
  return syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

bool parse_gate_mode(std::string_view text, GateMode* out) {
  if (text == "wait") {
    *out = GateMode::kWait;
  } else if (text == "wake") {
    *out = GateMode::kWake;
  } else if (text == "off") {
    *out = GateMode::kOff;
  } else {
    return false;
  }
  return true;
}

const char* gate_mode_name(GateMode mode) {
  switch (mode) {
    case GateMode::kWait:
      return "wait";
    case GateMode::kWake:
      return "wake";
    case GateMode::kOff:
      return "off";
  }
  return "?";
}

Gate::Gate() : membarrier_registered_(register_membarrier()) {
  membarrier_.store(membarrier_registered_, std::memory_order_relaxed);
}

bool Gate::set_membarrier(bool enabled) {
  membarrier_.store(enabled && membarrier_registered_, std::memory_order_relaxed);
  return membarrier_.load(std::memory_order_relaxed);
}

Gate& Gate::process() {
  static Gate* gate = [] {
    auto* g = new Gate();  // never deleted
    pthread_atfork(
        [] {
          Gate& p = process();
          p.registry_mu_.lock();
          p.mu_.lock();
        },
        [] {
          Gate& p = process();
          p.mu_.unlock();
          p.registry_mu_.unlock();
        },
        [] {
          Gate& p = process();
          p.mu_.unlock();
          p.registry_mu_.unlock();
          p.reset_in_child();
        });
    return g;
  }();
  return *gate;
}

void Gate::set_mode(GateMode mode) {
  mode_.store(mode, std::memory_order_relaxed);
  if (mode == GateMode::kOff) open();
  std::lock_guard<std::mutex> lock(mu_);
  opened_.notify_all();  // waiters re-read the mode (kWake: they ask for a wake)
}

void Gate::set_waker(std::function<bool(std::string*)> waker) {
  std::lock_guard<std::mutex> lock(mu_);
  waker_ = std::move(waker);
}

GateSlot* Gate::attach_thread() {
  if (t_exiting) return nullptr;
  std::lock_guard<std::mutex> lock(registry_mu_);
  GateSlot* slot = nullptr;
  for (GateSlot* s : slots_) {
    if (!s->in_use) {
      slot = s;
      break;
    }
  }
  if (slot == nullptr) {
    slot = new GateSlot();  // kept for reuse: the registry never shrinks below its peak
    slots_.push_back(slot);
  }
  slot->in_use = true;
  slot->call.store(nullptr, std::memory_order_relaxed);
  t_owner.registry_mu = &registry_mu_;
  t_owner.slot = slot;
  gate_detail::t_slot = slot;
  return slot;
}

bool Gate::close(std::chrono::milliseconds drain, std::string* busy) {
  if (mode() == GateMode::kOff) return true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_.store(true, std::memory_order_seq_cst);
  }
  if (membarrier_.load(std::memory_order_relaxed)) {
    // Every thread now runs a full barrier: its published call is visible below, or it sees the
    // gate closed.
    if (syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) {
      GS_ERROR("membarrier failed; gated calls fall back to full fences");
      membarrier_.store(false, std::memory_order_relaxed);
    }
  } else {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  std::vector<GateSlot*> slots;
  {
    std::lock_guard<std::mutex> lock(registry_mu_);
    slots = slots_;
  }
  const Clock::time_point deadline = Clock::now() + drain;
  for (GateSlot* s : slots) {
    for (int spins = 0;; ++spins) {
      const char* call = s->call.load(std::memory_order_acquire);
      if (call == nullptr) break;
      if (Clock::now() >= deadline) {
        if (busy != nullptr) *busy = call;
        return false;
      }
      if (spins < 64) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(spins < 1000 ? 50 : 1000));
      }
    }
  }
  return true;
}

void Gate::open() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_.store(false, std::memory_order_release);
  opened_.notify_all();
}

void Gate::wait(GateSlot* slot, const char* call) {
  slot->call.store(nullptr, std::memory_order_release);  // not inside while waiting
  const Clock::time_point start = Clock::now();
  bool logged = false;
  std::unique_lock<std::mutex> lock(mu_);
  ++waiting_;
  ++waits_;
  for (;;) {
    if (!closed_.load(std::memory_order_acquire)) {
      // Publish again; close() sets the flag under mu_, so a close after this line finds the
      // call published and waits for it.
      slot->call.store(call, std::memory_order_relaxed);
      fence();
      if (!closed_.load(std::memory_order_relaxed)) break;
      slot->call.store(nullptr, std::memory_order_release);
    }
    if (mode() == GateMode::kWake) request_wake_locked();
    const Clock::time_point now = Clock::now();
    if (now - start >= kLogAfter && (last_wait_log_ == Clock::time_point{} ||
                                     now - last_wait_log_ >= std::chrono::minutes(1))) {
      last_wait_log_ = now;
      logged = true;
      GS_WARN(
          "GPU work waits for wake: %s has waited %.0f s while memory is asleep (%zu threads "
          "waiting; GPUSLEEP_GATE=wake wakes on demand)",
          call, seconds_between(start, now), waiting_);
    }
    opened_.wait_for(lock, std::chrono::milliseconds(250));
  }
  --waiting_;
  const double waited = seconds_between(start, Clock::now());
  longest_wait_s_ = std::max(longest_wait_s_, waited);
  if (logged) GS_WARN("GPU work goes on: %s waited %.1f s for wake", call, waited);
}

void Gate::request_wake_locked() {
  if (!waker_) return;
  wake_requested_ = true;
  if (!waker_started_) {
    waker_started_ = true;
    start_quiet_thread([this] { waker_loop(); }).detach();
  }
  wake_wanted_.notify_one();
}

void Gate::waker_loop() {
  Clock::time_point last_failure_log{};
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    wake_wanted_.wait(lock, [this] { return wake_requested_; });
    wake_requested_ = false;
    if (!closed_.load(std::memory_order_acquire) || mode() != GateMode::kWake || !waker_) continue;
    auto waker = waker_;
    lock.unlock();
    std::string error;
    const bool ok = waker(&error);
    lock.lock();
    if (ok) {
      ++wakes_on_demand_;
      continue;
    }
    ++wake_failures_;
    const Clock::time_point now = Clock::now();
    if (last_failure_log == Clock::time_point{} ||
        now - last_failure_log >= std::chrono::minutes(1)) {
      last_failure_log = now;
      GS_WARN("wake on demand failed: %s; GPU work keeps waiting, retrying every second",
              error.c_str());
    }
    wake_wanted_.wait_for(lock, std::chrono::seconds(1), [] { return false; });
  }
}

GateStats Gate::stats() const {
  GateStats s;
  s.mode = mode();
  s.closed = closed();
  s.membarrier = membarrier_.load(std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    s.waiting = waiting_;
    s.waits = waits_;
    s.longest_wait_s = longest_wait_s_;
    s.wakes_on_demand = wakes_on_demand_;
    s.wake_failures = wake_failures_;
  }
  std::lock_guard<std::mutex> lock(registry_mu_);
  for (const GateSlot* g : slots_) {
    s.threads += g->in_use ? 1 : 0;
    s.calls += g->passes.load(std::memory_order_relaxed);
  }
  return s;
}

void Gate::reset_in_child() {
  mode_.store(GateMode::kOff, std::memory_order_relaxed);
  closed_.store(false, std::memory_order_relaxed);
  waiting_ = 0;
  waker_started_ = false;  // the waker thread did not survive the fork
  wake_requested_ = false;
  for (GateSlot* s : slots_) {
    if (s == gate_detail::t_slot) continue;
    s->in_use = false;
    s->call.store(nullptr, std::memory_order_relaxed);
  }
}

}  // namespace gpusleep

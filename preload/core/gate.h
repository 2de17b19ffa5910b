// The gate: GPU work the program submits (kernel and graph launches, copies, memsets) must not
// reach memory that is asleep, or the context faults with an illegal address. While any region is
// asleep the gate is closed, and a thread entering an intercepted GPU call waits until a wake
// opens it (GateMode::kWait) or has everything woken on demand (kWake).
//
// The fast path, taken by every intercepted call while the gate is open, is a thread-local store
// and a load: each thread publishes the call it is in, in a slot of its own, then reads the closed
// flag. Closing stores the flag, then forces a memory barrier on every thread of the process
// (membarrier), then waits until no slot shows a call. So either the entering thread sees the gate
// closed, or the closing side sees it inside and waits for it to leave: no call passes a closed
// gate and reaches the device after a sleep has synchronized it. Where membarrier is not available
// the entering thread pays a full fence instead.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace gpusleep {

enum class GateMode {
  kWait,  // gated calls wait until a wake
  kWake,  // gated calls have every asleep tag woken, then go on
  kOff,   // no gating: a call on asleep memory faults the context
};
bool parse_gate_mode(std::string_view text, GateMode* out);
const char* gate_mode_name(GateMode mode);

// One thread's published state: the gated call it is inside (null: none).
struct alignas(64) GateSlot {
  std::atomic<const char*> call{nullptr};
  std::atomic<std::uint64_t> passes{0};  // gated calls made (written by its thread only)
  bool in_use = false;  // owned by a live thread; guarded by the gate's registry lock
};

struct GateStats {
  GateMode mode = GateMode::kWait;
  bool closed = false;
  std::size_t waiting = 0;    // threads waiting at the gate now
  std::uint64_t waits = 0;    // gated calls that had to wait, since start
  double longest_wait_s = 0;  // the longest of those waits
  std::uint64_t wakes_on_demand = 0;
  std::uint64_t wake_failures = 0;
  std::size_t threads = 0;  // threads that have made a gated call and are alive
  std::uint64_t calls = 0;  // gated calls since start, every thread
  bool membarrier = false;  // the fast path is fence-free
};

class Gate {
 public:
  Gate();
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  // The process's gate (never destroyed: calls may arrive during exit).
  static Gate& process();

  void set_mode(GateMode mode);
  GateMode mode() const { return mode_.load(std::memory_order_relaxed); }
  // What kWake runs, on a thread of the library, to wake everything: true on success, else false
  // with the reason in *error.
  void set_waker(std::function<bool(std::string* error)> waker);
  // Whether entering threads rely on membarrier (when the kernel has it) or pay a full fence.
  // Returns whether membarrier is in use. Only while no thread is inside a gated call (tests).
  bool set_membarrier(bool enabled);

  // Closes the gate (a no-op when the mode is kOff) and waits until no thread is inside a gated
  // call, for at most `drain`. On timeout returns false, with the call a thread is still inside
  // in *busy; the gate stays closed either way (open() reopens it).
  bool close(std::chrono::milliseconds drain, std::string* busy);
  // Lets waiting and later calls through.
  void open();
  bool closed() const { return closed_.load(std::memory_order_acquire); }

  GateStats stats() const;

  // In a child after fork(): the child never sleeps (it has no control channel), so its gate is
  // open and off, and only the calling thread's slot is kept.
  void reset_in_child();

  // ---- used by GatePass ----
  // The calling thread's slot, registered on its first gated call; null once the thread is
  // exiting (its calls then pass).
  GateSlot* attach_thread();
  void fence() const {
    if (membarrier_.load(std::memory_order_relaxed)) {
      std::atomic_signal_fence(std::memory_order_seq_cst);
    } else {
      std::atomic_thread_fence(std::memory_order_seq_cst);
    }
  }
  bool closed_relaxed() const { return closed_.load(std::memory_order_relaxed); }
  // Slow path: the gate was seen closed with `call` published in `slot`. Returns once the gate is
  // open and `call` is published again.
  void wait(GateSlot* slot, const char* call);

 private:
  void waker_loop();
  void request_wake_locked();

  std::atomic<bool> closed_{false};
  std::atomic<GateMode> mode_{GateMode::kWait};
  std::atomic<bool> membarrier_{false};
  bool membarrier_registered_ = false;
  static constexpr std::chrono::seconds kLogAfter{5};

  mutable std::mutex registry_mu_;
  std::vector<GateSlot*> slots_;  // never freed; a slot is reused after its thread exits

  mutable std::mutex mu_;  // waiting, waking, statistics
  std::condition_variable opened_;
  std::condition_variable wake_wanted_;
  std::size_t waiting_ = 0;
  std::uint64_t waits_ = 0;
  double longest_wait_s_ = 0;
  std::uint64_t wakes_on_demand_ = 0;
  std::uint64_t wake_failures_ = 0;
  std::function<bool(std::string*)> waker_;
  bool waker_started_ = false;
  bool wake_requested_ = false;
  std::chrono::steady_clock::time_point last_wait_log_{};
};

namespace gate_detail {
// The calling thread's slot (null: not registered yet, or exiting).
extern thread_local GateSlot* t_slot __attribute__((tls_model("initial-exec")));
}  // namespace gate_detail

// Scope of one intercepted GPU call: construct before calling the real function. Nested gated
// calls on the same thread (a runtime call that reaches a driver hook) pass straight through.
class GatePass {
 public:
  GatePass(Gate& gate, const char* call) {
    GateSlot* s = gate_detail::t_slot;
    if (__builtin_expect(s == nullptr, 0)) {
      s = gate.attach_thread();
      if (s == nullptr) return;
    }
    if (s->call.load(std::memory_order_relaxed) != nullptr) return;  // nested
    s->call.store(call, std::memory_order_relaxed);
    gate.fence();
    if (__builtin_expect(gate.closed_relaxed(), 0)) gate.wait(s, call);
    s->passes.store(s->passes.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    slot_ = s;
  }
  ~GatePass() {
    if (slot_ != nullptr) slot_->call.store(nullptr, std::memory_order_release);
  }
  GatePass(const GatePass&) = delete;
  GatePass& operator=(const GatePass&) = delete;

 private:
  GateSlot* slot_ = nullptr;
};

}  // namespace gpusleep

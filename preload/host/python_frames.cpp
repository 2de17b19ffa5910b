// Reading Python frames with the CPython C API, resolved at run time.
#include "host/python_frames.h"

#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "base/log.h"
#include "base/threads.h"
#include "driver/real_runtime.h"

namespace gpusleep::python_frames {
namespace {

using PyObj = void*;

// The C API functions used, all in the stable ABI of CPython 3.9 and later (PyFrame_GetGlobals:
// 3.11, PyGC_*: 3.10; both optional).
struct PyApi {
  bool ok = false;
  int (*Py_IsInitialized)() = nullptr;
  int (*Py_IsFinalizing)() = nullptr;
  int (*PyGILState_Check)() = nullptr;
  PyObj (*PyGILState_GetThisThreadState)() = nullptr;
  int (*PyGILState_Ensure)() = nullptr;
  void (*PyGILState_Release)(int) = nullptr;
  PyObj (*PyEval_SaveThread)() = nullptr;
  void (*PyEval_RestoreThread)(PyObj) = nullptr;
  PyObj (*PyThreadState_GetFrame)(PyObj) = nullptr;
  PyObj (*PyFrame_GetBack)(PyObj) = nullptr;
  PyObj (*PyFrame_GetCode)(PyObj) = nullptr;
  int (*PyFrame_GetLineNumber)(PyObj) = nullptr;
  PyObj (*PyFrame_GetGlobals)(PyObj) = nullptr;
  PyObj (*PyObject_GetAttrString)(PyObj, const char*) = nullptr;
  const char* (*PyUnicode_AsUTF8)(PyObj) = nullptr;
  PyObj (*PyDict_GetItemString)(PyObj, const char*) = nullptr;
  void (*Py_DecRef)(PyObj) = nullptr;
  void (*PyErr_Fetch)(PyObj*, PyObj*, PyObj*) = nullptr;
  void (*PyErr_Restore)(PyObj, PyObj, PyObj) = nullptr;
  int (*PyGC_Disable)() = nullptr;
  int (*PyGC_Enable)() = nullptr;
};

template <typename F>
void find(F* out, const char* name) {
  *out = reinterpret_cast<F>(real_dlsym(RTLD_DEFAULT, name));
}

const PyApi& api() {
  static const PyApi a = [] {
    PyApi p;
    find(&p.Py_IsInitialized, "Py_IsInitialized");
    find(&p.Py_IsFinalizing, "Py_IsFinalizing");
    if (p.Py_IsFinalizing == nullptr) find(&p.Py_IsFinalizing, "_Py_IsFinalizing");
    find(&p.PyGILState_Check, "PyGILState_Check");
    find(&p.PyGILState_GetThisThreadState, "PyGILState_GetThisThreadState");
    find(&p.PyGILState_Ensure, "PyGILState_Ensure");
    find(&p.PyGILState_Release, "PyGILState_Release");
    find(&p.PyEval_SaveThread, "PyEval_SaveThread");
    find(&p.PyEval_RestoreThread, "PyEval_RestoreThread");
    find(&p.PyThreadState_GetFrame, "PyThreadState_GetFrame");
    find(&p.PyFrame_GetBack, "PyFrame_GetBack");
    find(&p.PyFrame_GetCode, "PyFrame_GetCode");
    find(&p.PyFrame_GetLineNumber, "PyFrame_GetLineNumber");
    find(&p.PyFrame_GetGlobals, "PyFrame_GetGlobals");
    find(&p.PyObject_GetAttrString, "PyObject_GetAttrString");
    find(&p.PyUnicode_AsUTF8, "PyUnicode_AsUTF8");
    find(&p.PyDict_GetItemString, "PyDict_GetItemString");
    find(&p.Py_DecRef, "Py_DecRef");
    find(&p.PyErr_Fetch, "PyErr_Fetch");
    find(&p.PyErr_Restore, "PyErr_Restore");
    find(&p.PyGC_Disable, "PyGC_Disable");
    find(&p.PyGC_Enable, "PyGC_Enable");
    p.ok = p.Py_IsInitialized && p.PyGILState_Check && p.PyGILState_GetThisThreadState &&
           p.PyGILState_Ensure && p.PyGILState_Release && p.PyEval_SaveThread &&
           p.PyEval_RestoreThread && p.PyThreadState_GetFrame && p.PyFrame_GetBack &&
           p.PyFrame_GetCode && p.PyFrame_GetLineNumber && p.PyObject_GetAttrString &&
           p.PyUnicode_AsUTF8 && p.PyDict_GetItemString && p.Py_DecRef && p.PyErr_Fetch &&
           p.PyErr_Restore;
    return p;
  }();
  return a;
}

std::string text_attr(const PyApi& p, PyObj obj, const char* name) {
  std::string out;
  PyObj v = p.PyObject_GetAttrString(obj, name);
  if (v == nullptr) return out;
  if (const char* s = p.PyUnicode_AsUTF8(v)) out = s;
  p.Py_DecRef(v);
  return out;
}

// Reads the frames of `tstate`. The calling thread holds the GIL; `tstate`'s thread is this one
// or one that does not hold it.
std::vector<PyFrame> walk(const PyApi& p, PyObj tstate) {
  std::vector<PyFrame> frames;
  PyObj type = nullptr, value = nullptr, trace = nullptr;
  p.PyErr_Fetch(&type, &value, &trace);
  // No collection while reading: it could run finalizers that free memory inside an allocation.
  const int gc_was_on = p.PyGC_Disable ? p.PyGC_Disable() : 0;
  PyObj frame = p.PyThreadState_GetFrame(tstate);
  while (frame != nullptr && frames.size() < kMaxFrames) {
    PyFrame f;
    if (PyObj code = p.PyFrame_GetCode(frame)) {
      f.qualname = text_attr(p, code, "co_qualname");
      if (f.qualname.empty()) f.qualname = text_attr(p, code, "co_name");
      f.file = text_attr(p, code, "co_filename");
      p.Py_DecRef(code);
    }
    f.line = p.PyFrame_GetLineNumber(frame);
    PyObj globals = p.PyFrame_GetGlobals ? p.PyFrame_GetGlobals(frame)
                                         : p.PyObject_GetAttrString(frame, "f_globals");
    if (globals != nullptr) {
      if (PyObj name = p.PyDict_GetItemString(globals, "__name__")) {
        if (const char* s = p.PyUnicode_AsUTF8(name)) f.module = s;
      }
      p.Py_DecRef(globals);
    }
    frames.push_back(std::move(f));
    PyObj back = p.PyFrame_GetBack(frame);
    p.Py_DecRef(frame);
    frame = back;
  }
  if (frame != nullptr) p.Py_DecRef(frame);
  if (gc_was_on && p.PyGC_Enable) p.PyGC_Enable();
  p.PyErr_Restore(type, value, trace);
  return frames;
}

// Reads another thread's frames while it waits, from a thread of the library's own that takes
// the GIL. A request the caller gave up on is dropped; the caller never waits longer than
// kHelperTimeoutMs, so a GIL held by a thread that waits for something the caller holds costs one
// call site, never a deadlock. The helper keeps one Python thread state for its life (creating
// one per request costs more than reading the frames), and both sides spin briefly before they
// sleep, since allocations come in bursts.
class Helper {
 public:
  static Helper& get() {
    static Helper* h = new Helper();  // lives with the process
    return *h;
  }

  bool read(PyObj tstate, std::vector<PyFrame>* out) {
    auto req = std::make_shared<Request>();
    req->tstate = tstate;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!started_) {
        started_ = true;
        start_quiet_thread([this] { run(); }).detach();
      }
      queue_.push_back(req);
    }
    cv_.notify_all();
    const auto deadline = Clock::now() + std::chrono::milliseconds(kHelperTimeoutMs);
    const auto spin_until = Clock::now() + std::chrono::microseconds(kSpinUs);
    while (req->state.load(std::memory_order_acquire) != kDone && Clock::now() < spin_until)
      std::this_thread::yield();
    std::unique_lock<std::mutex> lock(mu_);
    bool done = done_cv_.wait_until(
        lock, deadline, [&] { return req->state.load(std::memory_order_acquire) == kDone; });
    if (!done) {
      // Taken or not, the caller's frames stay put only while it waits or the helper holds the
      // GIL; the helper drops the result either way.
      req->state.store(kAbandoned);
      return false;
    }
    *out = std::move(req->frames);
    return true;
  }

 private:
  using Clock = std::chrono::steady_clock;
  static constexpr int kSpinUs = 200;
  enum State : int { kWaiting, kTaken, kDone, kAbandoned };
  struct Request {
    PyObj tstate = nullptr;
    std::atomic<int> state{kWaiting};
    std::vector<PyFrame> frames;
  };

  std::shared_ptr<Request> next() {
    const auto spin_until = Clock::now() + std::chrono::microseconds(kSpinUs);
    std::unique_lock<std::mutex> lock(mu_);
    while (queue_.empty() && Clock::now() < spin_until) {
      lock.unlock();
      std::this_thread::yield();
      lock.lock();
    }
    cv_.wait(lock, [&] { return !queue_.empty(); });
    std::shared_ptr<Request> req = queue_.front();
    queue_.pop_front();
    return req;
  }

  void run() {
    const PyApi& p = api();
    // A thread state of its own, kept: take it once, then give the GIL back until asked.
    p.PyGILState_Ensure();
    PyObj self = p.PyEval_SaveThread();
    for (;;) {
      std::shared_ptr<Request> req = next();
      if (req->state.load() == kAbandoned) continue;
      if (p.Py_IsFinalizing != nullptr && p.Py_IsFinalizing()) continue;  // the caller times out
      p.PyEval_RestoreThread(self);
      int expected = kWaiting;
      const bool take = req->state.compare_exchange_strong(expected, kTaken);
      // The caller cannot take the GIL back while this thread holds it, so the frames it had
      // when it asked are the frames read here, even if it has stopped waiting.
      std::vector<PyFrame> frames = take ? walk(p, req->tstate) : std::vector<PyFrame>{};
      self = p.PyEval_SaveThread();
      if (take) {
        std::lock_guard<std::mutex> lock(mu_);
        req->frames = std::move(frames);
        expected = kTaken;
        req->state.compare_exchange_strong(expected, kDone, std::memory_order_release);
      }
      done_cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable done_cv_;
  std::deque<std::shared_ptr<Request>> queue_;
  bool started_ = false;
};

}  // namespace

bool interpreter_running() {
  const PyApi& p = api();
  return p.ok && p.Py_IsInitialized() != 0 &&
         !(p.Py_IsFinalizing != nullptr && p.Py_IsFinalizing() != 0);
}

std::vector<PyFrame> capture(bool* unavailable) {
  *unavailable = false;
  if (!interpreter_running()) return {};
  const PyApi& p = api();
  PyObj tstate = p.PyGILState_GetThisThreadState();
  if (tstate == nullptr) return {};  // a thread Python never ran on
  if (p.PyGILState_Check() != 0) return walk(p, tstate);
  std::vector<PyFrame> frames;
  if (!Helper::get().read(tstate, &frames)) {
    *unavailable = true;
    GS_DEBUG("Python frames of an allocating thread not read within %d ms", kHelperTimeoutMs);
    return {};
  }
  return frames;
}

}  // namespace gpusleep::python_frames

#include "core/handle_maker.h"

#include <system_error>

#include "base/threads.h"

namespace gpusleep {

HandleMaker::HandleMaker(std::size_t count, bool threaded,
                         std::function<DrvStatus(std::size_t, PhysHandle*)> create,
                         std::function<void()> thread_init)
    : create_(std::move(create)), thread_init_(std::move(thread_init)), handles_(count, 0) {
  if (!threaded || count == 0) return;
  try {
    thread_ = start_quiet_thread([this] { run(); });
  } catch (const std::system_error&) {
    // No thread to be had: get() creates on the caller's thread.
  }
}

HandleMaker::~HandleMaker() {
  stop();
}

void HandleMaker::publish_locked(std::size_t i, DrvStatus rc, PhysHandle handle) {
  if (rc != kDrvOk) {
    failure_ = rc;
  } else {
    handles_[i] = handle;
    made_ = i + 1;
  }
  cv_.notify_all();
}

void HandleMaker::run() {
  if (thread_init_) thread_init_();
  for (std::size_t i = 0; i < handles_.size(); ++i) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_ || failure_ != kDrvOk) return;
    }
    PhysHandle h = 0;
    DrvStatus rc = create_(i, &h);
    std::lock_guard<std::mutex> lock(mu_);
    publish_locked(i, rc, h);
  }
}

DrvStatus HandleMaker::get(std::size_t i, PhysHandle* handle, std::size_t* failed) {
  std::unique_lock<std::mutex> lock(mu_);
  if (thread_.joinable()) {
    cv_.wait(lock, [&] { return made_ > i || failure_ != kDrvOk || stop_; });
  } else {
    // No helper: make the items up to i here (the lock is uncontended).
    while (made_ <= i && failure_ == kDrvOk && !stop_) {
      PhysHandle h = 0;
      DrvStatus rc = create_(made_, &h);
      publish_locked(made_, rc, h);
    }
  }
  if (made_ > i) {
    *handle = handles_[i];
    return kDrvOk;
  }
  *handle = 0;
  *failed = made_;
  return failure_ != kDrvOk ? failure_ : kDrvNotSupported;  // asked after stop(): a caller bug
}

void HandleMaker::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace gpusleep

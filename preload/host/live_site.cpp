#include "host/live_site.h"

#include <dlfcn.h>
#include <execinfo.h>

#include "host/python_frames.h"

namespace gpusleep {
namespace {
constexpr int kMaxNative = 48;
constexpr int kSkipNative = 3;  // take(), call_site()/python_frames(), the hook body
}  // namespace

void LiveSite::take() {
  if (site_ != nullptr) return;
  site_ = std::make_shared<CallSite>();
  void* pcs[kMaxNative];
  int n = backtrace(pcs, kMaxNative);
  for (int i = kSkipNative; i < n; ++i)
    site_->native.push_back(reinterpret_cast<std::uintptr_t>(pcs[i]));
  if (python_) {
    bool unavailable = false;
    site_->python = python_frames::capture(&unavailable);
    site_->python_unavailable = unavailable;
  }
}

const std::vector<PyFrame>& LiveSite::python_frames() {
  take();
  return site_->python;
}

const std::vector<std::string>& LiveSite::native_symbols() {
  take();
  if (!symbolized_) {
    symbolized_ = true;
    for (std::uintptr_t pc : site_->native)
      symbols_.push_back(native_symbol(pc));
  }
  return symbols_;
}

bool LiveSite::capturing() {
  if (capturing_ < 0) {
    bool relaxed = false;
    capturing_ = driver_.thread_capture_relaxed(&relaxed) == kDrvOk && relaxed ? 1 : 0;
  }
  return capturing_ == 1;
}

std::shared_ptr<const CallSite> LiveSite::call_site() {
  take();
  return site_;
}

}  // namespace gpusleep

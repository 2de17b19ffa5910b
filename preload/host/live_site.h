// The call-site context of an allocation in the host process: its Python frames (python_frames.h),
// its native return addresses and whether its thread is capturing a CUDA graph. Python frames and
// native addresses are taken once, when first asked for; symbols only when a rule asks.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/site_context.h"
#include "driver/driver.h"

namespace gpusleep {

class LiveSite final : public SiteContext {
 public:
  // `python`: whether to read Python frames at all (GPUSLEEP_PYTHON_STACKS).
  LiveSite(Driver& driver, bool python) : driver_(driver), python_(python) {}

  const std::vector<PyFrame>& python_frames() override;
  const std::vector<std::string>& native_symbols() override;
  bool capturing() override;
  std::shared_ptr<const CallSite> call_site() override;

 private:
  void take();

  Driver& driver_;
  const bool python_;
  std::shared_ptr<CallSite> site_;
  std::vector<std::string> symbols_;
  bool symbolized_ = false;
  int capturing_ = -1;
};

}  // namespace gpusleep

// Where an allocation was made: the Python frames of the allocating thread (innermost first) and
// the native return addresses. Captured once per allocation (host/live_site.cpp) and kept with its
// region, so `gpusleep regions` can show and group call sites, and rules can match them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace gpusleep {

struct PyFrame {
  std::string module;    // the frame's global __name__ ("" when unknown)
  std::string qualname;  // the code object's qualified name ("Module.to", "<module>")
  std::string file;      // the code object's file name
  int line = 0;
};

struct CallSite {
  std::vector<PyFrame> python;         // innermost first; empty without Python
  std::vector<std::uintptr_t> native;  // return addresses, innermost first
  bool python_unavailable = false;     // Python is there but the stack could not be read
};

// "module:qualname (file:line)".
std::string describe_frame(const PyFrame& frame);
// "libfoo.so+0x1234 (symbol)" for a native return address.
std::string describe_native(std::uintptr_t address);
// The demangled symbol of a native return address ("" when it has none).
std::string native_symbol(std::uintptr_t address);

// What rules may ask about an allocation beyond its size, device and sequence: read lazily, since
// most rule sets never need the stacks.
class SiteContext {
 public:
  virtual ~SiteContext() = default;
  virtual const std::vector<PyFrame>& python_frames() = 0;
  // Demangled symbols of the native frames ("" for frames without one), innermost first.
  virtual const std::vector<std::string>& native_symbols() = 0;
  // Whether the allocating thread is inside a CUDA stream capture (relaxed capture mode, as
  // PyTorch sets around allocations while capturing a graph).
  virtual bool capturing() = 0;
  // The call site to keep with the region (null: none).
  virtual std::shared_ptr<const CallSite> call_site() = 0;
};

}  // namespace gpusleep

// The Python frames of the calling thread, read through the interpreter already in the process
// (found with dlsym; the library does not link Python). Frames are read only by a thread that
// holds the GIL: the calling thread itself when it holds it, else a helper thread that takes the
// GIL while the caller waits, at most a bounded time. A thread that released the GIL (PyTorch
// does around every operator) cannot run Python code until it takes the GIL back, so its frames
// stay as they were while the helper reads them.
#pragma once

#include <cstddef>
#include <vector>

#include "core/site_context.h"

namespace gpusleep::python_frames {

inline constexpr std::size_t kMaxFrames = 64;
inline constexpr int kHelperTimeoutMs = 100;

// The calling thread's Python frames, innermost first (empty when the thread runs no Python, or
// the process has no interpreter). *unavailable is set when there is Python but the frames could
// not be read in time.
std::vector<PyFrame> capture(bool* unavailable);

// Whether the process has a running Python interpreter.
bool interpreter_running();

}  // namespace gpusleep::python_frames

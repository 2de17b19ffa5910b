// Clocks shared by the library and the CLI: monotonic time for durations, wall time for stamps.
#pragma once

#include <chrono>

namespace gpusleep {

// Seconds on a clock that never goes back; only differences mean anything.
inline double monotonic_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Seconds since the Unix epoch.
inline double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace gpusleep

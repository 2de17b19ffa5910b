// The library's version.
#pragma once

namespace gpusleep {
inline constexpr const char* kVersionString = "0.1.0";
}  // namespace gpusleep

// Human-readable byte sizes, shared by the library's messages and the CLI's output.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>

namespace gpusleep {

// "16.00 GiB", "2.00 MiB", "512 B": powers of 1024, two decimals past bytes, up to TiB.
inline std::string format_bytes(std::size_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024.0 && unit < 4) {
    v /= 1024.0;
    ++unit;
  }
  char buf[32];
  if (unit == 0) {
    std::snprintf(buf, sizeof buf, "%zu B", bytes);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f %s", v, kUnits[unit]);
  }
  return buf;
}

}  // namespace gpusleep

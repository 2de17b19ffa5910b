// Leveled, bounded logging to stderr: one line per call, each carrying the pid.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace gpusleep {

enum class LogLevel : int { kOff = 0, kError = 1, kWarn = 2, kInfo = 3, kDebug = 4 };

// Parses "off", "error", "warn", "info" or "debug". Returns false (and leaves *out) otherwise.
bool parse_log_level(std::string_view text, LogLevel* out);
const char* log_level_name(LogLevel level);

void log_set_level(LogLevel level);
bool log_enabled(LogLevel level);

// Writes one line "gpusleep[PID] LEVEL: message". Lines are cut at 1 KiB. A token bucket (burst
// kLogBurst lines, then kLogRefillPerSecond a second) bounds the rate; lines over the bound are
// counted and the count is reported with the next line that gets through.
void log_write(LogLevel level, const char* format, ...) __attribute__((format(printf, 2, 3)));

inline constexpr int kLogBurst = 64;
inline constexpr int kLogRefillPerSecond = 10;

// Replaces where lines go (tests); nullptr restores stderr. Also resets the rate bound.
void log_set_sink(std::function<void(std::string_view line)> sink);

}  // namespace gpusleep

#define GS_LOG(level, ...)                                                         \
  do {                                                                             \
    if (::gpusleep::log_enabled(level)) ::gpusleep::log_write(level, __VA_ARGS__); \
  } while (0)
#define GS_ERROR(...) GS_LOG(::gpusleep::LogLevel::kError, __VA_ARGS__)
#define GS_WARN(...) GS_LOG(::gpusleep::LogLevel::kWarn, __VA_ARGS__)
#define GS_INFO(...) GS_LOG(::gpusleep::LogLevel::kInfo, __VA_ARGS__)
#define GS_DEBUG(...) GS_LOG(::gpusleep::LogLevel::kDebug, __VA_ARGS__)

// Bounded logging: a token bucket keeps a failing loop from flooding the host's stderr.
#include "base/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <mutex>

namespace gpusleep {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kWarn)};

struct Bucket {
  std::mutex mu;
  double tokens = kLogBurst;
  std::chrono::steady_clock::time_point last = std::chrono::steady_clock::now();
  std::uint64_t suppressed = 0;
  std::function<void(std::string_view)> sink;
};

Bucket& bucket() {
  static Bucket* b = new Bucket();  // never destroyed: logging stays usable during exit
  return *b;
}

void emit(Bucket& b, std::string_view line) {
  if (b.sink) {
    b.sink(line);
    return;
  }
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) return;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace

bool parse_log_level(std::string_view text, LogLevel* out) {
  static constexpr std::pair<std::string_view, LogLevel> kNames[] = {
      {"off", LogLevel::kOff},   {"error", LogLevel::kError}, {"warn", LogLevel::kWarn},
      {"info", LogLevel::kInfo}, {"debug", LogLevel::kDebug},
  };
  for (const auto& [name, level] : kNames) {
    if (text == name) {
      *out = level;
      return true;
    }
  }
  return false;
}

const char* log_level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kOff:
      return "off";
    case LogLevel::kError:
      return "error";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kDebug:
      return "debug";
  }
  return "?";
}

void log_set_level(LogLevel level) {
  g_level.store(static_cast<int>(level));
}

bool log_enabled(LogLevel level) {
  return level != LogLevel::kOff &&
         static_cast<int>(level) <= g_level.load(std::memory_order_relaxed);
}

void log_set_sink(std::function<void(std::string_view)> sink) {
  Bucket& b = bucket();
  std::lock_guard<std::mutex> lock(b.mu);
  b.sink = std::move(sink);
  b.tokens = kLogBurst;
  b.suppressed = 0;
  b.last = std::chrono::steady_clock::now();
}

void log_write(LogLevel level, const char* format, ...) {
  char message[1024];
  va_list args;
  va_start(args, format);
  int n = std::vsnprintf(message, sizeof message, format, args);
  va_end(args);
  if (n < 0) return;

  Bucket& b = bucket();
  std::lock_guard<std::mutex> lock(b.mu);
  auto now = std::chrono::steady_clock::now();
  double elapsed = std::chrono::duration<double>(now - b.last).count();
  b.last = now;
  b.tokens = std::min<double>(kLogBurst, b.tokens + elapsed * kLogRefillPerSecond);
  if (b.tokens < 1.0) {
    ++b.suppressed;
    return;
  }
  b.tokens -= 1.0;

  char line[1280];
  int len;
  if (b.suppressed > 0) {
    len = std::snprintf(line, sizeof line, "gpusleep[%d] %s: %s (%llu earlier lines suppressed)\n",
                        static_cast<int>(::getpid()), log_level_name(level), message,
                        static_cast<unsigned long long>(b.suppressed));
    b.suppressed = 0;
  } else {
    len = std::snprintf(line, sizeof line, "gpusleep[%d] %s: %s\n", static_cast<int>(::getpid()),
                        log_level_name(level), message);
  }
  if (len < 0) return;
  if (static_cast<size_t>(len) >= sizeof line) {
    len = sizeof line - 1;
    line[len - 1] = '\n';
  }
  emit(b, std::string_view(line, static_cast<size_t>(len)));
}

}  // namespace gpusleep

// Bounded line reading: a peer that never sends a newline costs at most `max` bytes of memory.
#include "protocol/line_io.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

namespace gpusleep {

ReadResult LineReader::read_line(std::string* line, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    std::size_t nl = buffer_.find('\n', scanned_);
    if (nl != std::string::npos) {
      if (nl > max_) return ReadResult::kTooLong;
      line->assign(buffer_, 0, nl);
      buffer_.erase(0, nl + 1);
      scanned_ = 0;
      if (!line->empty() && line->back() == '\r') line->pop_back();
      return ReadResult::kLine;
    }
    scanned_ = buffer_.size();
    if (buffer_.size() > max_) return ReadResult::kTooLong;

    int wait_ms = -1;
    if (timeout_ms >= 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
      if (left <= 0) return ReadResult::kTimeout;
      wait_ms = static_cast<int>(left);
    }
    pollfd pfd{fd_, POLLIN, 0};
    int pr = ::poll(&pfd, 1, wait_ms);
    if (pr < 0) {
      if (errno == EINTR) continue;
      return ReadResult::kError;
    }
    if (pr == 0) return ReadResult::kTimeout;

    char chunk[16384];
    std::size_t room = max_ + 1 - buffer_.size();
    ssize_t n = ::recv(fd_, chunk, std::min(sizeof chunk, room), 0);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return ReadResult::kError;
    }
    if (n == 0) return ReadResult::kEof;
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
}

bool write_all(int fd, std::string_view data, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return false;
    int wait_ms = -1;
    if (timeout_ms >= 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) return false;
      wait_ms = static_cast<int>(left);
    }
    pollfd pfd{fd, POLLOUT, 0};
    if (::poll(&pfd, 1, wait_ms) < 0 && errno != EINTR) return false;
  }
  return true;
}

}  // namespace gpusleep

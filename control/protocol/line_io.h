// Reading bounded lines from, and writing whole messages to, a stream socket.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace gpusleep {

enum class ReadResult {
  kLine,     // *line holds one line, without its '\n'
  kEof,      // the peer closed the connection (a partial last line is dropped)
  kTooLong,  // more than `max` bytes arrived without a newline; the stream cannot be resynced
  kTimeout,  // nothing complete arrived within the timeout
  kError,    // the socket failed
};

// Buffers reads from one file descriptor and hands out lines of at most `max` bytes.
class LineReader {
 public:
  LineReader(int fd, std::size_t max) : fd_(fd), max_(max) {}
  // Waits at most `timeout_ms` (negative: forever) for the next line.
  ReadResult read_line(std::string* line, int timeout_ms);

 private:
  int fd_;
  std::size_t max_;
  std::string buffer_;
  std::size_t scanned_ = 0;  // bytes of buffer_ known to hold no newline
};

// Writes all of `data` within `timeout_ms` (negative: no deadline); never raises SIGPIPE. Returns
// false when the peer is gone or has not taken the data by the deadline (a peer that does not
// read); the connection should then be closed, its stream being cut mid-message.
bool write_all(int fd, std::string_view data, int timeout_ms = -1);

}  // namespace gpusleep

// The control server: a Unix socket in the private runtime directory, one thread accepting and
// one thread per connection, each connection a sequence of request lines answered in order.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>

#include "protocol/protocol.h"

namespace gpusleep {

struct ServerConfig {
  std::string dir;  // runtime directory (created private if missing)
  std::size_t max_message = protocol::kMaxRequest;  // longest request line
  int max_connections = 16;
  int idle_timeout_ms = 10 * 60 * 1000;  // a silent client is dropped after this
  int write_timeout_ms = 10 * 1000;      // a client that does not take its reply by then is dropped
  int accept_backoff_ms = 100;           // pause after accept fails (out of descriptors, memory)
};

// Turns one request line into one encoded reply line. Must not throw.
using LineHandler = std::function<std::string(std::string_view line)>;

class Server {
 public:
  Server(ServerConfig config, LineHandler handler);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Creates the socket DIR/PID.sock (mode 0600) and starts accepting. A spare descriptor is kept
  // so that when the process runs out of them a connection is still accepted and answered
  // `busy` rather than left pending, and accepting backs off instead of spinning. Returns false
  // with the reason in *error (the directory is not private, the path is too long, ...).
  bool start(std::string* error);
  // Stops accepting, ends every connection, waits for their threads and removes the socket.
  void stop();
  // For process exit: closes the listening socket and removes the socket file if this process
  // created it. Does not wait for anything.
  void abandon();

  // In a forked child: the threads are not there and the socket is the parent's. Closes the
  // inherited listening socket without touching either.
  void forget_after_fork();

  const std::string& path() const { return path_; }
  int active_connections() const { return active_.load(); }
  // Times accept failed (out of descriptors or memory), for tests and status.
  std::uint64_t accept_failures() const { return accept_failures_.load(); }

 private:
  void accept_loop();
  void serve(int fd);
  void refuse(int fd, Failure code, std::string_view message);
  // Out of descriptors: frees the spare to accept and refuse one pending connection.
  void shed_one(int listen_fd);

  const ServerConfig config_;
  const LineHandler handler_;
  std::string path_;
  pid_t owner_ = 0;
  std::atomic<int> listen_fd_{-1};
  int spare_fd_ = -1;  // used by the accepting thread only
  std::atomic<std::uint64_t> accept_failures_{0};
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::atomic<int> active_{0};
  std::mutex mu_;
  std::condition_variable idle_;
  std::set<int> connections_;
};

}  // namespace gpusleep

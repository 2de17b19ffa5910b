// The control server. Peers are checked by their kernel credentials (same uid, or root) before
// any byte of theirs is read; replies never raise SIGPIPE in the host.
#include "server/server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/log.h"
#include "base/threads.h"
#include "protocol/line_io.h"
#include "protocol/protocol.h"
#include "protocol/runtime_dir.h"

namespace gpusleep {

Server::Server(ServerConfig config, LineHandler handler)
    : config_(std::move(config)), handler_(std::move(handler)) {}

Server::~Server() {
  stop();
}

bool Server::start(std::string* error) {
  if (!ensure_private_dir(config_.dir, true, error)) return false;
  owner_ = ::getpid();
  std::string path = socket_path(config_.dir, owner_);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    *error = "socket path " + path + " is longer than " + std::to_string(sizeof addr.sun_path - 1) +
             " bytes; set GPUSLEEP_RUNTIME_DIR to a shorter directory";
    return false;
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + strerror(errno);
    return false;
  }
  // A file left by an earlier process with this pid: the directory is ours, so it is stale.
  ::unlink(path.c_str());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::chmod(path.c_str(), 0600) != 0 || ::listen(fd, 16) != 0) {
    *error = "cannot listen on " + path + ": " + strerror(errno);
    ::close(fd);
    ::unlink(path.c_str());
    return false;
  }
  path_ = path;
  listen_fd_ = fd;
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  acceptor_ = start_quiet_thread([this] { accept_loop(); });
  return true;
}

void Server::accept_loop() {
  while (!stopping_.load()) {
    int lfd = listen_fd_.load();
    if (lfd < 0) return;
    pollfd pfd{lfd, POLLIN, 0};
    int pr = ::poll(&pfd, 1, 200);
    if (pr <= 0) continue;
    int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == EINTR || err == EAGAIN || err == ECONNABORTED) continue;
      // Out of descriptors (or kernel memory): the connection stays pending and poll would report
      // it again at once. Answer it with the spare descriptor, then pause before trying again.
      ++accept_failures_;
      if (err == EMFILE || err == ENFILE) shed_one(lfd);
      pollfd none{-1, 0, 0};
      ::poll(&none, 0, config_.accept_backoff_ms);
      continue;
    }
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        (cred.uid != ::getuid() && cred.uid != 0)) {
      GS_WARN("refused a control connection from uid %d", static_cast<int>(cred.uid));
      refuse(fd, Failure::kPermissionDenied, "only the process's own user or root may connect");
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (active_.load() >= config_.max_connections || stopping_.load()) {
        refuse(fd, Failure::kBusy,
               "too many control connections (" + std::to_string(config_.max_connections) + ")");
        continue;
      }
      ++active_;
      connections_.insert(fd);
    }
    try {
      start_quiet_thread([this, fd] { serve(fd); }).detach();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      connections_.erase(fd);
      --active_;
      ::close(fd);
      idle_.notify_all();
    }
  }
}

void Server::refuse(int fd, Failure code, std::string_view message) {
  // The acceptor must not wait on a peer that does not read.
  write_all(fd, protocol::encode(protocol::error_reply(nullptr, code, message)), 100);
  ::close(fd);
}

void Server::shed_one(int listen_fd) {
  static int warnings = 0;
  if (warnings < 3) {
    ++warnings;
    GS_WARN("the process is out of file descriptors; refusing control connections");
  }
  if (spare_fd_ < 0) return;
  ::close(spare_fd_);
  spare_fd_ = -1;
  int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd >= 0) {
    refuse(fd, Failure::kBusy,
           "the process is out of file descriptors; try again when it has closed some");
  }
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

void Server::serve(int fd) {
  try {
    LineReader reader(fd, config_.max_message);
    std::string line;
    while (!stopping_.load()) {
      ReadResult r = reader.read_line(&line, config_.idle_timeout_ms);
      if (r == ReadResult::kTooLong) {
        write_all(fd,
                  protocol::encode(protocol::error_reply(nullptr, Failure::kMessageTooLarge,
                                                         "request longer than " +
                                                             std::to_string(config_.max_message) +
                                                             " bytes; closing the connection")),
                  config_.write_timeout_ms);
        break;
      }
      if (r != ReadResult::kLine) break;
      if (!write_all(fd, handler_(line), config_.write_timeout_ms)) break;
    }
  } catch (...) {
    GS_ERROR("control connection ended by an internal error");
  }
  std::lock_guard<std::mutex> lock(mu_);
  connections_.erase(fd);
  ::close(fd);
  --active_;
  idle_.notify_all();
}

void Server::stop() {
  stopping_ = true;
  if (acceptor_.joinable()) acceptor_.join();
  int lfd = listen_fd_.exchange(-1);
  if (lfd >= 0) ::close(lfd);
  if (spare_fd_ >= 0) ::close(spare_fd_);
  spare_fd_ = -1;
  {
    std::unique_lock<std::mutex> lock(mu_);
    for (int fd : connections_)
      ::shutdown(fd, SHUT_RDWR);
    idle_.wait(lock, [this] { return active_.load() == 0; });
  }
  if (!path_.empty() && owner_ == ::getpid()) ::unlink(path_.c_str());
  path_.clear();
}

void Server::forget_after_fork() {
  stopping_ = true;
  int lfd = listen_fd_.exchange(-1);
  if (lfd >= 0) ::close(lfd);
  if (spare_fd_ >= 0) ::close(spare_fd_);
  spare_fd_ = -1;
  path_.clear();
  // The thread object names a thread of the parent; moving it out touches no thread.
  new std::thread(std::move(acceptor_));
  std::lock_guard<std::mutex> lock(mu_);
  for (int fd : connections_)
    ::close(fd);
  connections_.clear();
  active_ = 0;
}

void Server::abandon() {
  stopping_ = true;
  int lfd = listen_fd_.exchange(-1);
  if (lfd >= 0) ::close(lfd);
  if (!path_.empty() && owner_ == ::getpid()) ::unlink(path_.c_str());
  if (acceptor_.joinable()) acceptor_.detach();
}

}  // namespace gpusleep

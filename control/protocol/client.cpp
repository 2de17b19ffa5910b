// Client transport and process discovery.
#include "protocol/client.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "protocol/line_io.h"
#include "protocol/runtime_dir.h"

namespace gpusleep {

Client::~Client() {
  if (fd_ >= 0) ::close(fd_);
}

std::unique_ptr<Client> Client::connect(const std::string& path, std::string* error,
                                        bool* untrusted) {
  if (untrusted != nullptr) *untrusted = false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    *error = "socket path too long: " + path;
    return nullptr;
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + strerror(errno);
    return nullptr;
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    ::close(fd);
    if (e == ECONNREFUSED) {
      *error = "nothing is listening on " + path + " (its process has exited)";
    } else {
      *error = "cannot connect to " + path + ": " + strerror(e);
    }
    return nullptr;
  }
  // A socket someone else listens on answers whatever its owner likes: a spoofed status, or
  // nothing at all. Only this user's processes and root's are ours to talk to.
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    int e = errno;
    ::close(fd);
    *error = "cannot check who listens on " + path + ": " + strerror(e);
    return nullptr;
  }
  if (cred.uid != ::getuid() && cred.uid != 0) {
    ::close(fd);
    *error = "the process listening on " + path + " (pid " + std::to_string(cred.pid) +
             ") runs as uid " + std::to_string(cred.uid) + ", not as this user (" +
             std::to_string(::getuid()) + ") or root; not talking to it";
    if (untrusted != nullptr) *untrusted = true;
    return nullptr;
  }
  return std::unique_ptr<Client>(new Client(fd));
}

bool Client::call(const protocol::Json& request, protocol::Json* reply, std::string* error,
                  int timeout_ms) {
  // A process that refuses the connection (another user, too many connections) answers and
  // closes at once, so the request may not get through: its answer is still there to read.
  const bool sent = write_all(fd_, protocol::encode(request));
  LineReader reader(fd_, protocol::kMaxReply);
  std::string line;
  switch (reader.read_line(&line, sent ? timeout_ms : 1000)) {
    case ReadResult::kLine:
      break;
    case ReadResult::kTimeout:
      *error = "no reply in time";
      return false;
    case ReadResult::kTooLong:
      *error = "the reply is too large";
      return false;
    case ReadResult::kEof:
      *error = sent ? "the process closed the connection without replying"
                    : "the process closed the connection";
      return false;
    case ReadResult::kError:
      *error = sent ? std::string("read: ") + strerror(errno) : "the process closed the connection";
      return false;
  }
  return protocol::parse_reply(line, reply, error);
}

bool trusted_runtime_dir(const std::string& dir, std::string* error) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0 && errno == ENOENT) return true;
  if (ensure_private_dir(dir, false, error)) return true;
  *error += "; not using it (the library refuses it too)";
  return false;
}

std::vector<ProcessEntry> find_processes(const std::string& dir, bool clean,
                                         std::vector<std::string>* removed, std::string* error) {
  std::vector<ProcessEntry> live;
  std::string why;
  if (!trusted_runtime_dir(dir, &why)) {
    if (error != nullptr) *error = why;
    return live;
  }
  for (const SocketEntry& s : list_sockets(dir)) {
    bool alive = process_alive(s.pid);
    bool untrusted = false;
    if (alive) {
      std::string reason;
      alive = Client::connect(s.path, &reason, &untrusted) != nullptr;
    }
    if (alive || untrusted) {
      // A listener of another user is listed, so that talking to it fails with the reason.
      live.push_back(ProcessEntry{s.pid, s.path});
    } else if (clean && ::unlink(s.path.c_str()) == 0 && removed != nullptr) {
      removed->push_back(s.path);
    }
  }
  return live;
}

}  // namespace gpusleep

// The client side of the protocol, shared by every C++ tool that talks to the library: connect to
// a process's socket, send a request, read its reply; and find the processes to talk to.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "protocol/protocol.h"

namespace gpusleep {

class Client {
 public:
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Connects to the control socket at `path`. Null with the reason in *error.
  static std::unique_ptr<Client> connect(const std::string& path, std::string* error);

  // Sends `request` and waits for its reply, at most `timeout_ms` (negative: no limit; a sleep of
  // many GiB takes seconds). Returns false with the reason in *error on a transport failure or a
  // malformed reply; an error reply from the server is a success here (check reply["ok"]).
  bool call(const protocol::Json& request, protocol::Json* reply, std::string* error,
            int timeout_ms = -1);

 private:
  explicit Client(int fd) : fd_(fd) {}
  int fd_;
  std::string buffer_;
};

struct ProcessEntry {
  pid_t pid;
  std::string socket;
};

// The processes with a live control socket in `dir`, by pid. Sockets whose process is gone (or
// that refuse connections) are removed when `clean` and `dir` is private to this user; their
// paths are added to *removed.
std::vector<ProcessEntry> find_processes(const std::string& dir, bool clean,
                                         std::vector<std::string>* removed);

}  // namespace gpusleep

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

  // Connects to the control socket at `path` and checks who listens there: a process of this
  // user or of root (SO_PEERCRED). Null with the reason in *error; *untrusted (when given) is set
  // when the connection was made but the listener belongs to another user.
  static std::unique_ptr<Client> connect(const std::string& path, std::string* error,
                                         bool* untrusted = nullptr);

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

// Whether clients may trust the runtime directory `dir`: it is missing (no process runs), or it is
// a directory of this user that no one else can write, as the library requires of it
// (ensure_private_dir). False with the reason in *error: a directory another user made may hold
// their sockets, and talking to those would take their replies for our processes'.
bool trusted_runtime_dir(const std::string& dir, std::string* error);

// The processes with a live control socket in `dir`, by pid: nothing unless trusted_runtime_dir
// (then *error, when given, says why). Sockets whose process is gone (or that refuse
// connections) are removed when `clean`; their paths are added to *removed.
std::vector<ProcessEntry> find_processes(const std::string& dir, bool clean,
                                         std::vector<std::string>* removed,
                                         std::string* error = nullptr);

}  // namespace gpusleep

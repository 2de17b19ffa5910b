// Where control sockets live: a private per-user directory, one socket per process named by pid.
#pragma once

#include <sys/types.h>
#include <string>
#include <vector>

namespace gpusleep {

// $GPUSLEEP_RUNTIME_DIR, else $XDG_RUNTIME_DIR/gpusleep, else /tmp/gpusleep-UID.
// `configured` (when not empty) replaces the environment lookup of GPUSLEEP_RUNTIME_DIR.
std::string default_runtime_dir(const std::string& configured = "");

// Checks that `dir` is a directory (not a link) owned by this user with no access for group or
// others, creating it with mode 0700 (and its parent, when that is missing) if `create`.
// Returns false with the reason in *error.
bool ensure_private_dir(const std::string& dir, bool create, std::string* error);

std::string socket_path(const std::string& dir, pid_t pid);

struct SocketEntry {
  pid_t pid;
  std::string path;
};
// The PID.sock entries of `dir`, by pid.
std::vector<SocketEntry> list_sockets(const std::string& dir);

// Whether a process with this pid exists.
bool process_alive(pid_t pid);

}  // namespace gpusleep

// Runtime directory checks. A socket directory another user could write into would let them
// replace a socket and talk to our clients, so ownership and mode are checked, not assumed.
#include "protocol/runtime_dir.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace gpusleep {

std::string default_runtime_dir(const std::string& configured) {
  if (!configured.empty()) return configured;
  if (const char* d = std::getenv("GPUSLEEP_RUNTIME_DIR"); d != nullptr && d[0] == '/') return d;
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x != nullptr && x[0] == '/') {
    struct stat st;
    if (::stat(x, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == ::getuid()) {
      return std::string(x) + "/gpusleep";
    }
  }
  return "/tmp/gpusleep-" + std::to_string(::getuid());
}

bool ensure_private_dir(const std::string& dir, bool create, std::string* error) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT || !create) {
      *error = "runtime directory " + dir + ": " + strerror(errno);
      return false;
    }
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      if (errno == ENOENT) {
        std::string parent = dir.substr(0, dir.find_last_of('/'));
        if (!parent.empty() && ::mkdir(parent.c_str(), 0700) == 0) {
          return ensure_private_dir(dir, create, error);
        }
      }
      *error = "cannot create runtime directory " + dir + ": " + strerror(errno);
      return false;
    }
    if (::lstat(dir.c_str(), &st) != 0) {
      *error = "runtime directory " + dir + ": " + strerror(errno);
      return false;
    }
  }
  if (!S_ISDIR(st.st_mode)) {
    *error = "runtime directory " + dir + " is not a directory";
    return false;
  }
  if (st.st_uid != ::getuid()) {
    *error = "runtime directory " + dir + " is owned by uid " + std::to_string(st.st_uid) +
             ", not by this user (" + std::to_string(::getuid()) + ")";
    return false;
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", static_cast<unsigned>(st.st_mode & 0777));
    *error = "runtime directory " + dir + " has mode " + mode +
             "; it must not be open to group or others (chmod 700)";
    return false;
  }
  return true;
}

std::string socket_path(const std::string& dir, pid_t pid) {
  return dir + "/" + std::to_string(pid) + ".sock";
}

std::vector<SocketEntry> list_sockets(const std::string& dir) {
  std::vector<SocketEntry> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    const std::string suffix = ".sock";
    if (name.size() <= suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    std::string digits = name.substr(0, name.size() - suffix.size());
    if (digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    out.push_back(SocketEntry{static_cast<pid_t>(std::stol(digits)), dir + "/" + name});
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(),
            [](const SocketEntry& a, const SocketEntry& b) { return a.pid < b.pid; });
  return out;
}

bool process_alive(pid_t pid) {
  return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM);
}

}  // namespace gpusleep

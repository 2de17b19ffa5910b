// Spill files. O_TMPFILE gives a file that never had a name; where the file system lacks it, a
// named file is unlinked before anything is written to it. A file system that refuses O_DIRECT
// (or an unaligned request) gets buffered I/O instead of a failed sleep.
#include "core/spill.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

namespace gpusleep {
namespace {

std::atomic<int> g_fault_writes{0};
std::atomic<int> g_fault_error{0};

bool injected_fault(int* error) {
  int e = g_fault_error.load();
  if (e == 0) return false;
  if (g_fault_writes.fetch_sub(1) > 0) return false;
  *error = e;
  return true;
}

std::string errno_text(int e) {
  return std::string(strerror(e)) + (e == ENOSPC ? " (the spill directory's disk is full)" : "");
}

}  // namespace

void spill_inject_write_error(int writes, int error) {
  g_fault_writes = writes;
  g_fault_error = error;
}

bool check_spill_dir(const std::string& dir, std::string* error) {
  if (dir.empty() || dir[0] != '/') {
    *error = "spill directory '" + dir + "' is not an absolute path";
    return false;
  }
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) {
    *error = "spill directory " + dir + ": " + strerror(errno);
    return false;
  }
  if (!S_ISDIR(st.st_mode)) {
    *error = "spill directory " + dir + " is not a directory (links are not followed)";
    return false;
  }
  if (st.st_uid != ::getuid() && st.st_uid != 0) {
    *error = "spill directory " + dir + " is owned by uid " + std::to_string(st.st_uid) +
             ", neither this user (" + std::to_string(::getuid()) + ") nor root";
    return false;
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", static_cast<unsigned>(st.st_mode & 0777));
    *error = "spill directory " + dir + " has mode " + mode +
             ": writable by group or others without the sticky bit";
    return false;
  }
  struct statfs fs;
  if (::statfs(dir.c_str(), &fs) != 0) {
    *error = "spill directory " + dir + ": " + strerror(errno);
    return false;
  }
  if (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC) {
    *error = "spill directory " + dir +
             " is in memory (tmpfs or ramfs): spilling there takes the host memory it should "
             "spare; choose a directory on a disk";
    return false;
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    *error = "spill directory " + dir + " is not writable: " + strerror(errno);
    return false;
  }
  return true;
}

std::size_t spill_free_bytes(const std::string& dir) {
  struct statvfs vfs;
  if (::statvfs(dir.c_str(), &vfs) != 0) return 0;
  return static_cast<std::size_t>(vfs.f_bavail) * vfs.f_frsize;
}

std::unique_ptr<SpillFile> SpillFile::create(const std::string& dir, std::size_t bytes,
                                             std::string* error) {
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_DIRECT | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EINVAL) fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    std::random_device rd;
    for (int attempt = 0; attempt < 8 && fd < 0; ++attempt) {
      char name[64];
      std::snprintf(name, sizeof name, "/.gpusleep-spill-%08x%08x", rd(), rd());
      std::string path = dir + name;
      fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600);
      if (fd >= 0) {
        ::unlink(path.c_str());
      } else if (errno != EEXIST) {
        break;
      }
    }
  }
  if (fd < 0) {
    *error = "cannot open a spill file in " + dir + ": " + strerror(errno);
    return nullptr;
  }
  const bool direct = (::fcntl(fd, F_GETFL) & O_DIRECT) != 0 ||
                      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_DIRECT) == 0;
  if (bytes > 0) {
    int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes));
    if (rc == EOPNOTSUPP || rc == EINVAL) {
      rc = spill_free_bytes(dir) >= bytes ? 0 : ENOSPC;
      if (rc == 0 && ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) rc = errno;
    }
    if (rc != 0) {
      *error =
          "cannot reserve " + std::to_string(bytes) + " bytes in " + dir + ": " + errno_text(rc);
      ::close(fd);
      return nullptr;
    }
  }
  return std::unique_ptr<SpillFile>(new SpillFile(fd, bytes, direct));
}

SpillFile::~SpillFile() {
  ::close(fd_);
}

bool SpillFile::drop_direct() {
  int flags = ::fcntl(fd_, F_GETFL);
  if (!direct_ || flags < 0 || ::fcntl(fd_, F_SETFL, flags & ~O_DIRECT) != 0) return false;
  direct_ = false;
  return true;
}

bool SpillFile::write(std::size_t offset, const void* data, std::size_t n, std::string* error) {
  const char* p = static_cast<const char*>(data);
  std::size_t done = 0;
  while (done < n) {
    int e = 0;
    ssize_t w = -1;
    if (injected_fault(&e)) {
      errno = e;
    } else {
      w = ::pwrite(fd_, p + done, n - done, static_cast<off_t>(offset + done));
    }
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL && drop_direct()) continue;
      *error = "spill write failed: " + errno_text(errno);
      return false;
    }
    if (w == 0) {
      *error = "spill write failed: " + errno_text(ENOSPC);
      return false;
    }
    done += static_cast<std::size_t>(w);
  }
  return true;
}

bool SpillFile::read(std::size_t offset, void* data, std::size_t n, std::string* error) {
  char* p = static_cast<char*>(data);
  std::size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd_, p + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL && drop_direct()) continue;
      *error = std::string("spill read failed: ") + strerror(errno);
      return false;
    }
    if (r == 0) {
      *error = "spill read failed: the file ends early";
      return false;
    }
    done += static_cast<std::size_t>(r);
  }
  return true;
}

void SpillFile::discard(std::size_t offset, std::size_t n) {
  ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
              static_cast<off_t>(n));
}

}  // namespace gpusleep

// The disk tier: region contents written to an anonymous file in a spill directory (a file with
// no name from the moment it is opened, so a host that dies leaves nothing on disk), with direct
// I/O so spilling does not fill the page cache with what it moves out of the way.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace gpusleep {

// Checks that `dir` can take spilled memory: an absolute path to a directory (not a link) on a
// disk, not in memory (tmpfs, ramfs: that would take the host memory spilling spares), owned by
// this user or root, and not writable by group or others unless sticky. Returns false with the
// reason in *error.
bool check_spill_dir(const std::string& dir, std::string* error);

// Bytes an unprivileged writer may still put on the file system of `dir` (0 when unknown).
std::size_t spill_free_bytes(const std::string& dir);

// Offsets, sizes and buffers of direct I/O are multiples of this.
inline constexpr std::size_t kSpillAlign = 4096;

// Not thread-safe for the same range; distinct ranges may be written and read concurrently.
class SpillFile {
 public:
  // Opens an anonymous file of `bytes` bytes in `dir` (which check_spill_dir() accepted) and
  // allocates its blocks, so a disk without room fails here, before anything is written. Returns
  // null with the reason in *error.
  static std::unique_ptr<SpillFile> create(const std::string& dir, std::size_t bytes,
                                           std::string* error);
  // Closes the file; its blocks return to the disk.
  ~SpillFile();
  SpillFile(const SpillFile&) = delete;
  SpillFile& operator=(const SpillFile&) = delete;

  // Writes `n` bytes at `offset` from `data`. `offset` and `data` are kSpillAlign-aligned, `n` a
  // multiple of it. Returns false with the reason in *error.
  bool write(std::size_t offset, const void* data, std::size_t n, std::string* error);
  // Reads what write() wrote, under the same alignment.
  bool read(std::size_t offset, void* data, std::size_t n, std::string* error);
  // Gives back the blocks of a range no longer needed (best effort).
  void discard(std::size_t offset, std::size_t n);
  std::size_t bytes() const { return bytes_; }
  // Whether the file bypasses the page cache.
  bool direct() const { return direct_; }

 private:
  SpillFile(int fd, std::size_t bytes, bool direct) : fd_(fd), bytes_(bytes), direct_(direct) {}
  bool drop_direct();

  int fd_;
  std::size_t bytes_;
  bool direct_;
};

// Test hook: after `writes` more successful writes, every write fails with `error` (an errno
// value, e.g. ENOSPC) until the hook is reset with error 0.
void spill_inject_write_error(int writes, int error);

}  // namespace gpusleep

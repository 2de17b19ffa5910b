// Spill directories and files: which directories are refused and why, files that leave no name
// behind, contents read back intact, and a full disk reported before or while writing.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "core/spill.h"

using namespace gpusleep;

namespace {

// A directory on a disk for one test (the working directory's file system: the build tree),
// removed with its files.
struct DiskDir {
  std::string path;
  DiskDir() {
    char cwd[4096];
    REQUIRE(getcwd(cwd, sizeof cwd) != nullptr);
    std::string tmpl = std::string(cwd) + "/spill-test-XXXXXX";
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
    chmod(path.c_str(), 0700);
  }
  ~DiskDir() {
    std::string cmd = "rm -rf '" + path + "'";
    (void)std::system(cmd.c_str());
  }
  bool on_disk() const {
    struct statfs fs;
    return statfs(path.c_str(), &fs) == 0 && fs.f_type != TMPFS_MAGIC && fs.f_type != RAMFS_MAGIC;
  }
  int entries() const {
    int n = 0;
    DIR* d = opendir(path.c_str());
    while (dirent* e = readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) ++n;
    }
    closedir(d);
    return n;
  }
};

// Page-aligned memory, as the pinned staging buffers are.
struct Aligned {
  std::size_t n;
  char* p;
  explicit Aligned(std::size_t bytes) : n(bytes) {
    p = static_cast<char*>(
        mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  }
  ~Aligned() { munmap(p, n); }
};

}  // namespace

TEST_CASE("spill directory: a private directory on a disk is accepted", "[spill]") {
  DiskDir d;
  if (!d.on_disk()) {
    WARN("the build tree is in memory");
    return;
  }
  std::string error;
  CHECK(check_spill_dir(d.path, &error));
  CHECK(error.empty());
}

TEST_CASE("spill directory: memory file systems, links, relative paths and files are refused",
          "[spill]") {
  std::string error;
  CHECK_FALSE(check_spill_dir("relative/dir", &error));
  CHECK_THAT(error, Catch::Contains("absolute"));
  struct statfs fs;
  if (statfs("/dev/shm", &fs) == 0 && fs.f_type == TMPFS_MAGIC) {
    CHECK_FALSE(check_spill_dir("/dev/shm", &error));
    CHECK_THAT(error, Catch::Contains("tmpfs"));
  }
  DiskDir d;
  std::string link = d.path + "/link";
  REQUIRE(symlink(d.path.c_str(), link.c_str()) == 0);
  CHECK_FALSE(check_spill_dir(link, &error));
  CHECK_THAT(error, Catch::Contains("not a directory"));
  CHECK_FALSE(check_spill_dir(d.path + "/missing", &error));
}

TEST_CASE("spill directory: open to group or others without the sticky bit is refused", "[spill]") {
  DiskDir d;
  if (!d.on_disk()) {
    WARN("the build tree is in memory");
    return;
  }
  std::string error;
  REQUIRE(chmod(d.path.c_str(), 0777) == 0);
  CHECK_FALSE(check_spill_dir(d.path, &error));
  CHECK_THAT(error, Catch::Contains("sticky"));
  REQUIRE(chmod(d.path.c_str(), 0770) == 0);
  CHECK_FALSE(check_spill_dir(d.path, &error));
  REQUIRE(chmod(d.path.c_str(), 01777) == 0);
  CHECK(check_spill_dir(d.path, &error));
}

TEST_CASE("spill directory owned by another user is refused", "[spill]") {
  DiskDir d;
  if (getuid() != 0) {
    WARN("giving a directory to another user needs root");
    return;
  }
  REQUIRE(chown(d.path.c_str(), 65534, 65534) == 0);
  std::string error;
  CHECK_FALSE(check_spill_dir(d.path, &error));
  CHECK_THAT(error, Catch::Contains("owned by uid 65534"));
}

TEST_CASE("spill file has no name in its directory and reads back what was written", "[spill]") {
  DiskDir d;
  if (!d.on_disk()) {
    WARN("the build tree is in memory");
    return;
  }
  const std::size_t bytes = 3 * 1024 * 1024 + 8192;
  std::string error;
  auto file = SpillFile::create(d.path, bytes, &error);
  REQUIRE(file != nullptr);
  CHECK(d.entries() == 0);
  Aligned out(bytes);
  Aligned in(bytes);
  for (std::size_t i = 0; i < bytes; ++i)
    out.p[i] = static_cast<char>(i * 131 + (i >> 12));
  // Written in two ranges in the reverse order, as workers may.
  const std::size_t half = 1024 * 1024;
  REQUIRE(file->write(half, out.p + half, bytes - half, &error));
  REQUIRE(file->write(0, out.p, half, &error));
  REQUIRE(file->read(0, in.p, bytes, &error));
  CHECK(std::memcmp(out.p, in.p, bytes) == 0);
  file.reset();
  CHECK(d.entries() == 0);
}

TEST_CASE("spill file: a disk without room fails at creation, before anything is written",
          "[spill]") {
  DiskDir d;
  if (!d.on_disk()) {
    WARN("the build tree is in memory");
    return;
  }
  std::string error;
  const std::size_t too_much = spill_free_bytes(d.path) + (std::size_t{1} << 40);
  CHECK(SpillFile::create(d.path, too_much, &error) == nullptr);
  CHECK_THAT(error, Catch::Contains("cannot reserve"));
  CHECK(d.entries() == 0);
}

TEST_CASE("spill file: a write that finds the disk full says so", "[spill]") {
  DiskDir d;
  if (!d.on_disk()) {
    WARN("the build tree is in memory");
    return;
  }
  std::string error;
  auto file = SpillFile::create(d.path, 2 * 4096, &error);
  REQUIRE(file != nullptr);
  Aligned buf(4096);
  spill_inject_write_error(1, ENOSPC);
  CHECK(file->write(0, buf.p, 4096, &error));
  CHECK_FALSE(file->write(4096, buf.p, 4096, &error));
  spill_inject_write_error(0, 0);
  CHECK_THAT(error, Catch::Contains("disk is full"));
  CHECK(file->write(4096, buf.p, 4096, &error));
}

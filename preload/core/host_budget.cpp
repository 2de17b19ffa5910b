// The host-memory ledger. Text, one line per process, rewritten whole under an exclusive flock:
// a few hundred bytes per process, read and written once per 256 MiB piece, so its cost vanishes
// beside the pinning it accounts for. A line that does not parse (a writer killed mid-write) is
// dropped, which can only return bytes to the budget, never take them.
#include "core/host_budget.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "base/log.h"
#include "core/mirror.h"
#include "core/options.h"

namespace gpusleep {
namespace {

constexpr std::size_t kMaxLedgerBytes = std::size_t{1} << 20;
constexpr std::size_t kMaxEntries = 8192;

// Reads a small file whole (at most 4 KiB); false when it cannot be read.
bool read_small(const std::string& path, std::string* out) {
  FILE* f = std::fopen(path.c_str(), "re");
  if (f == nullptr) return false;
  char buf[4096];
  std::size_t n = std::fread(buf, 1, sizeof buf, f);
  std::fclose(f);
  out->assign(buf, n);
  return true;
}

// A cgroup file's number; "max" (v2) and v1's near-2^63 "unlimited" read as no limit.
bool read_limit(const std::string& path, std::size_t* out, bool* unlimited) {
  std::string text;
  if (!read_small(path, &text)) return false;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
    text.pop_back();
  *unlimited = text == "max";
  if (*unlimited) return true;
  unsigned long long v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size()) return false;
  *unlimited = v >= (1ull << 62);
  *out = static_cast<std::size_t>(v);
  return true;
}

bool read_pair(const std::string& limit_path, const std::string& usage_path, CgroupMemory* out) {
  std::size_t limit = 0;
  std::size_t usage = 0;
  bool unlimited = false;
  bool ignored = false;
  if (!read_limit(limit_path, &limit, &unlimited)) return false;
  if (unlimited) return true;  // found, no limit
  if (!read_limit(usage_path, &usage, &ignored)) return false;
  out->limited = true;
  out->limit = limit;
  out->usage = usage;
  return true;
}

}  // namespace

bool parse_budget(std::string_view text, BudgetSetting* out) {
  if (!text.empty() && text.back() == '%') {
    text.remove_suffix(1);
    unsigned value = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || p != text.data() + text.size() || value > 100) {
      return false;
    }
    *out = BudgetSetting{true, true, value / 100.0, 0};
    return true;
  }
  std::size_t bytes = 0;
  if (!parse_size(text, &bytes)) return false;
  *out = BudgetSetting{true, false, 0, bytes};
  return true;
}

CgroupMemory read_cgroup_memory(const std::string& root, const std::string& self_cgroup) {
  CgroupMemory result;
  std::string text;
  if (!read_small(self_cgroup, &text)) return result;
  // Lines "ID:CONTROLLERS:PATH": v2 is "0::PATH", v1's memory controller names "memory".
  std::string v2_path;
  std::string v1_path;
  bool has_v2 = false;
  bool has_v1 = false;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    std::size_t a = line.find(':');
    std::size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    std::string controllers = line.substr(a + 1, b - a - 1);
    std::string path = line.substr(b + 1);
    if (path.find("..") != std::string::npos) continue;
    if (line.compare(0, a, "0") == 0 && controllers.empty()) {
      has_v2 = true;
      v2_path = path;
    }
    for (std::size_t c = 0; c <= controllers.size();) {
      std::size_t comma = controllers.find(',', c);
      if (comma == std::string::npos) comma = controllers.size();
      if (controllers.compare(c, comma - c, "memory") == 0) {
        has_v1 = true;
        v1_path = path;
      }
      c = comma + 1;
    }
  }
  // Inside a container the process's own path may not exist below the mount: its cgroup is
  // then the mount's root.
  if (has_v2) {
    for (const std::string& dir : {root + v2_path, root}) {
      if (read_pair(dir + "/memory.max", dir + "/memory.current", &result)) return result;
    }
  }
  if (has_v1) {
    for (const std::string& dir : {root + "/memory" + v1_path, root + "/memory"}) {
      if (read_pair(dir + "/memory.limit_in_bytes", dir + "/memory.usage_in_bytes", &result)) {
        return result;
      }
    }
  }
  return result;
}

std::size_t host_headroom_bytes() {
  std::size_t available = host_available_bytes();
  CgroupMemory cg = read_cgroup_memory();
  if (cg.limited) available = std::min(available, cg.limit - std::min(cg.limit, cg.usage));
  return available;
}

std::size_t resolve_budget(const BudgetSetting& setting, std::size_t headroom) {
  if (setting.set && !setting.percent) return setting.bytes;
  if (headroom == std::numeric_limits<std::size_t>::max()) return 0;  // nothing known: pin nothing
  double fraction = setting.set ? setting.fraction : 0.5;
  return static_cast<std::size_t>(static_cast<double>(headroom) * fraction) & ~std::size_t{4095};
}

bool process_start_time(pid_t pid, unsigned long long* start) {
  std::string text;
  if (pid <= 0 || !read_small("/proc/" + std::to_string(pid) + "/stat", &text)) return false;
  // The command name may hold spaces and parentheses: fields are counted after the last ')'.
  std::size_t close = text.rfind(')');
  if (close == std::string::npos) return false;
  std::size_t pos = close + 1;
  for (int field = 3; field <= 22; ++field) {
    while (pos < text.size() && text[pos] == ' ')
      ++pos;
    std::size_t end = text.find(' ', pos);
    if (end == std::string::npos) end = text.size();
    if (field == 22) {
      auto [p, ec] = std::from_chars(text.data() + pos, text.data() + end, *start);
      return ec == std::errc();
    }
    pos = end;
  }
  return false;
}

HostBudget::HostBudget(std::string ledger, std::size_t limit, bool explicit_limit)
    : path_(std::move(ledger)), limit_(limit), explicit_limit_(explicit_limit) {
  std::lock_guard<std::mutex> lock(mu_);
  BudgetUsage u;
  update_locked([](HostHeld&) { return true; }, &u);  // sets or adopts the node's limit
}

HostBudget::~HostBudget() {
  std::lock_guard<std::mutex> lock(mu_);
  BudgetUsage u;
  here_ = HostHeld{};
  update_locked([](HostHeld&) { return true; }, &u);
  if (fd_ >= 0) ::close(fd_);
}

std::size_t HostBudget::limit() const {
  std::lock_guard<std::mutex> lock(mu_);
  return limit_;
}

bool HostBudget::open_locked() {
  if (fd_ >= 0) return true;
  if (broken_ || path_.empty()) return false;
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  struct stat st;
  if (fd_ >= 0 && (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::getuid())) {
    ::close(fd_);
    fd_ = -1;
    errno = EPERM;
  }
  if (fd_ < 0) {
    GS_WARN("host budget ledger %s unusable (%s); this process keeps its own budget", path_.c_str(),
            strerror(errno));
    broken_ = true;
    return false;
  }
  return true;
}

template <typename Fn>
bool HostBudget::update_locked(Fn change, BudgetUsage* usage) {
  usage->limit = limit_;
  if (!open_locked()) {
    HostHeld next = here_;
    bool ok = change(next);
    if (ok && next.pinned > here_.pinned && next.pinned > limit_) ok = false;
    if (ok) here_ = next;
    usage->here = usage->node = here_;
    usage->processes = 1;
    return ok;
  }
  while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
  }
  std::string text(kMaxLedgerBytes, '\0');
  ssize_t n = ::pread(fd_, text.data(), text.size(), 0);
  text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);

  const pid_t self = ::getpid();
  unsigned long long self_start = 0;
  process_start_time(self, &self_start);
  std::size_t ledger_limit = 0;
  bool has_limit = false;
  std::vector<Entry> entries;
  std::size_t pos = 0;
  while (pos < text.size() && entries.size() < kMaxEntries) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) break;  // a torn last line
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    unsigned long long limit = 0;
    Entry e;
    unsigned long long pid = 0, pinned = 0, pageable = 0, spilled = 0;
    char tail = 0;
    if (std::sscanf(line.c_str(), "limit %llu%c", &limit, &tail) == 1) {
      ledger_limit = limit;
      has_limit = true;
    } else if (std::sscanf(line.c_str(), "%llu %llu %llu %llu %llu%c", &pid, &e.start, &pinned,
                           &pageable, &spilled, &tail) == 5) {
      e.pid = static_cast<pid_t>(pid);
      e.held = HostHeld{pinned, pageable, spilled};
      unsigned long long start = 0;
      if (e.pid == self) continue;  // rewritten from here_ below
      if (!process_start_time(e.pid, &start) || start != e.start) continue;  // died
      entries.push_back(e);
    }
  }
  // The first process sets the node's limit; a user's explicit setting replaces it.
  if (explicit_limit_ || !has_limit || entries.empty()) {
    if (has_limit && ledger_limit != limit_ && !entries.empty()) {
      GS_INFO("host budget set to %zu bytes for the node (was %llu)", limit_,
              static_cast<unsigned long long>(ledger_limit));
    }
  } else {
    limit_ = ledger_limit;
  }
  HostHeld others;
  for (const Entry& e : entries) {
    others.pinned += e.held.pinned;
    others.pageable += e.held.pageable;
    others.spilled += e.held.spilled;
  }
  HostHeld next = here_;
  bool ok = change(next);
  if (ok && next.pinned > here_.pinned && others.pinned + next.pinned > limit_) ok = false;
  if (ok) here_ = next;

  std::string out = "limit " + std::to_string(limit_) + "\n";
  entries.push_back(Entry{self, self_start, here_});
  for (const Entry& e : entries) {
    if (e.held.pinned == 0 && e.held.pageable == 0 && e.held.spilled == 0 && e.pid != self) {
      continue;
    }
    char line[128];
    std::snprintf(line, sizeof line, "%lld %llu %zu %zu %zu\n", static_cast<long long>(e.pid),
                  e.start, e.held.pinned, e.held.pageable, e.held.spilled);
    out += line;
  }
  if (::pwrite(fd_, out.data(), out.size(), 0) != static_cast<ssize_t>(out.size()) ||
      ::ftruncate(fd_, static_cast<off_t>(out.size())) != 0) {
    GS_DEBUG("host budget ledger %s: write failed: %s", path_.c_str(), strerror(errno));
  }
  ::flock(fd_, LOCK_UN);

  usage->limit = limit_;
  usage->here = here_;
  usage->node = HostHeld{others.pinned + here_.pinned, others.pageable + here_.pageable,
                         others.spilled + here_.spilled};
  usage->processes = static_cast<int>(entries.size());
  usage->shared = true;
  return ok;
}

bool HostBudget::reserve_pinned(std::size_t bytes) {
  if (bytes == 0) return true;
  CgroupMemory cg = read_cgroup_memory();
  if (cg.limited && cg.usage + bytes + kCgroupReserve > cg.limit) return false;
  std::lock_guard<std::mutex> lock(mu_);
  BudgetUsage u;
  return update_locked(
      [bytes](HostHeld& h) {
        h.pinned += bytes;
        return true;
      },
      &u);
}

void HostBudget::release_pinned(std::size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  BudgetUsage u;
  update_locked(
      [bytes](HostHeld& h) {
        h.pinned -= std::min(h.pinned, bytes);
        return true;
      },
      &u);
}

namespace {
void add_clamped(std::size_t* v, long long delta) {
  if (delta >= 0) {
    *v += static_cast<std::size_t>(delta);
  } else {
    *v -= std::min(*v, static_cast<std::size_t>(-delta));
  }
}
}  // namespace

void HostBudget::add_pageable(long long delta) {
  std::lock_guard<std::mutex> lock(mu_);
  BudgetUsage u;
  update_locked(
      [delta](HostHeld& h) {
        add_clamped(&h.pageable, delta);
        return true;
      },
      &u);
}

void HostBudget::add_spilled(long long delta) {
  std::lock_guard<std::mutex> lock(mu_);
  BudgetUsage u;
  update_locked(
      [delta](HostHeld& h) {
        add_clamped(&h.spilled, delta);
        return true;
      },
      &u);
}

BudgetUsage HostBudget::usage() {
  std::lock_guard<std::mutex> lock(mu_);
  BudgetUsage u;
  update_locked([](HostHeld&) { return true; }, &u);
  return u;
}

}  // namespace gpusleep

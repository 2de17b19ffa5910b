// The node-wide host budget: its setting, the cgroup limit it honours, one ledger shared by
// processes, and the bytes of processes that died coming back.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "core/host_budget.h"

using namespace gpusleep;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

// A private directory for one test, removed with its files.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/gpusleep-budget-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::string cmd = "rm -rf '" + path + "'";
    (void)std::system(cmd.c_str());
  }
  void write(const std::string& rel, const std::string& text) const {
    std::string full = path + "/" + rel;
    std::string dir = full.substr(0, full.find_last_of('/'));
    std::string cmd = "mkdir -p '" + dir + "'";
    (void)std::system(cmd.c_str());
    std::ofstream(full) << text;
  }
  std::string read(const std::string& rel) const {
    std::ifstream in(path + "/" + rel);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
};

// A child process that holds `bytes` pinned in the ledger until killed.
pid_t child_holding(const std::string& ledger, std::size_t bytes) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    auto* b = new HostBudget(ledger, 100 * kMiB, false);
    char ok = b->reserve_pinned(bytes) ? '1' : '0';
    (void)!::write(fds[1], &ok, 1);
    for (;;)
      pause();
  }
  close(fds[1]);
  char ok = 0;
  REQUIRE(::read(fds[0], &ok, 1) == 1);
  close(fds[0]);
  REQUIRE(ok == '1');
  return pid;
}

void kill_child(pid_t pid) {
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

}  // namespace

TEST_CASE("host budget setting takes sizes and percentages and refuses anything else",
          "[host_budget]") {
  BudgetSetting s;
  REQUIRE(parse_budget("64G", &s));
  CHECK((s.set && !s.percent && s.bytes == (std::size_t{64} << 30)));
  REQUIRE(parse_budget("0", &s));
  CHECK((s.set && s.bytes == 0));
  REQUIRE(parse_budget("25%", &s));
  CHECK((s.set && s.percent && s.fraction == Approx(0.25)));
  for (const char* bad : {"", "%", "101%", "-5%", "12X", "half", "1.5G"})
    CHECK_FALSE(parse_budget(bad, &s));
}

TEST_CASE("host budget defaults to half of the headroom, a percentage to its share",
          "[host_budget]") {
  CHECK(resolve_budget(BudgetSetting{}, 100 * kMiB) == 50 * kMiB);
  BudgetSetting pct;
  REQUIRE(parse_budget("10%", &pct));
  CHECK(resolve_budget(pct, 100 * kMiB) == (10 * kMiB & ~std::size_t{4095}));
  BudgetSetting bytes;
  REQUIRE(parse_budget("3M", &bytes));
  CHECK(resolve_budget(bytes, 1 * kMiB) == 3 * kMiB);
}

TEST_CASE("host budget reads the cgroup v2 limit, and v1 where v2 has none", "[host_budget]") {
  TempDir t;
  t.write("self_v2", "0::/jobs/a\n");
  t.write("cg/jobs/a/memory.max", "1073741824\n");
  t.write("cg/jobs/a/memory.current", "268435456\n");
  CgroupMemory m = read_cgroup_memory(t.path + "/cg", t.path + "/self_v2");
  CHECK(m.limited);
  CHECK(m.limit == 1073741824);
  CHECK(m.usage == 268435456);

  t.write("cg/jobs/b/memory.max", "max\n");
  t.write("cg/jobs/b/memory.current", "5\n");
  t.write("self_v2_unlimited", "0::/jobs/b\n");
  CHECK_FALSE(read_cgroup_memory(t.path + "/cg", t.path + "/self_v2_unlimited").limited);

  t.write("self_v1", "4:memory:/batch/x\n0::/\n");
  t.write("cg1/memory/batch/x/memory.limit_in_bytes", "2147483648\n");
  t.write("cg1/memory/batch/x/memory.usage_in_bytes", "1048576\n");
  m = read_cgroup_memory(t.path + "/cg1", t.path + "/self_v1");
  CHECK(m.limited);
  CHECK(m.limit == 2147483648u);
  CHECK(m.usage == 1048576);

  t.write("cg2/memory/memory.limit_in_bytes", "9223372036854771712\n");
  t.write("cg2/memory/memory.usage_in_bytes", "1\n");
  CHECK_FALSE(read_cgroup_memory(t.path + "/cg2", t.path + "/self_v1").limited);
}

TEST_CASE("host budget refuses a reservation past the limit and changes nothing", "[host_budget]") {
  TempDir t;
  HostBudget b(t.path + "/ledger", 10 * kMiB, true);
  CHECK(b.reserve_pinned(6 * kMiB));
  CHECK_FALSE(b.reserve_pinned(5 * kMiB));
  CHECK(b.usage().here.pinned == 6 * kMiB);
  CHECK(b.reserve_pinned(4 * kMiB));
  b.release_pinned(10 * kMiB);
  CHECK(b.usage().node.pinned == 0);
  struct stat st;
  REQUIRE(stat((t.path + "/ledger").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("host budget is shared: another process's pinned bytes count until it dies",
          "[host_budget]") {
  TempDir t;
  const std::string ledger = t.path + "/ledger";
  pid_t child = child_holding(ledger, 60 * kMiB);
  HostBudget b(ledger, 100 * kMiB, false);
  BudgetUsage u = b.usage();
  CHECK(u.limit == 100 * kMiB);
  CHECK(u.node.pinned == 60 * kMiB);
  CHECK(u.here.pinned == 0);
  CHECK(u.processes == 2);
  CHECK_FALSE(b.reserve_pinned(50 * kMiB));
  CHECK(b.reserve_pinned(40 * kMiB));
  kill_child(child);
  // The dead child's entry is dropped at the next update, and its bytes are free again.
  CHECK(b.reserve_pinned(60 * kMiB));
  CHECK(b.usage().node.pinned == 100 * kMiB);
  CHECK(b.usage().processes == 1);
}

TEST_CASE("host budget drops entries of dead pids and of reused pids with another start time",
          "[host_budget]") {
  TempDir t;
  // 999999999 is past any pid_max; the parent is alive but started at another time than 1.
  t.write("ledger", "limit 104857600\n999999999 5 104857600 0 0\n" + std::to_string(getppid()) +
                        " 1 104857600 0 0\ngarbage line\n");
  HostBudget b(t.path + "/ledger", 100 * kMiB, false);
  CHECK(b.reserve_pinned(100 * kMiB));
  CHECK(t.read("ledger").find("999999999") == std::string::npos);
}

TEST_CASE("host budget: the first process sets the node's limit, an explicit setting replaces it",
          "[host_budget]") {
  TempDir t;
  const std::string ledger = t.path + "/ledger";
  pid_t child = child_holding(ledger, 1 * kMiB);  // sets 100 MiB
  {
    HostBudget defaulted(ledger, 500 * kMiB, false);
    CHECK(defaulted.limit() == 100 * kMiB);
  }
  {
    HostBudget set(ledger, 20 * kMiB, true);
    CHECK(set.limit() == 20 * kMiB);
    CHECK(set.usage().limit == 20 * kMiB);
  }
  kill_child(child);
}

TEST_CASE("host budget without a usable ledger keeps a budget of its own", "[host_budget]") {
  HostBudget b("/proc/no-such-dir/ledger", 8 * kMiB, true);
  CHECK(b.reserve_pinned(8 * kMiB));
  CHECK_FALSE(b.reserve_pinned(1));
  BudgetUsage u = b.usage();
  CHECK_FALSE(u.shared);
  CHECK(u.here.pinned == 8 * kMiB);
}

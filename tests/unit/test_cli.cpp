// The gpusleep command against a real server in this process: commands, output, exit codes, and
// the removal of stale sockets.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <tuple>

#include "fake_gpu.h"
#include "protocol/runtime_dir.h"
#include "server/handler.h"
#include "server/server.h"
#include "temp_dir.h"

using namespace gpusleep;
using namespace gpusleep::test;
using protocol::Json;
namespace fs = std::filesystem;

namespace {

// Runs the CLI with the test's runtime directory; returns exit status and stdout.
std::pair<int, std::string> run_cli(const std::string& dir, const std::string& args) {
  std::string cmd = "GPUSLEEP_RUNTIME_DIR=" + dir + " " + GPUSLEEP_CLI + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (std::size_t n = fread(buf, 1, sizeof buf, p))
    out.append(buf, n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace

TEST_CASE("the CLI drives a real server: status, sleep, wake, tag, errors and exit codes",
          "[cli]") {
  TempDir tmp;
  FakeGpu gpu;
  Engine engine(gpu.driver(), test_options());
  DevicePtr a = must_allocate(engine, 4 * kMiB);
  fill(a, 4 * kMiB, 77);
  Handler handler(&engine);
  const std::string dir = tmp.path + "/run";
  Server server(ServerConfig{dir},
                [&](std::string_view line) { return handler.handle_line(line); });
  std::string error;
  REQUIRE(server.start(&error));

  auto [rc, out] = run_cli(dir, "status");
  CHECK(rc == 0);
  CHECK(out.find("default") != std::string::npos);
  CHECK(out.find("4.00 MiB") != std::string::npos);

  std::tie(rc, out) = run_cli(dir, "sleep --json");
  CHECK(rc == 0);
  Json j = Json::parse(out);
  CHECK(j["errors"].empty());
  REQUIRE(j["processes"].size() == 1);
  CHECK(j["processes"][0]["pid"] == static_cast<int>(getpid()));
  CHECK(j["processes"][0]["result"]["bytes"] == 4 * kMiB);
  CHECK(engine.regions()[0].state == RegionState::kAsleep);

  std::tie(rc, out) = run_cli(dir, "sleep");
  CHECK(rc == 0);
  CHECK(out.find("already asleep: default") != std::string::npos);

  std::tie(rc, out) = run_cli(dir, "wake --pid " + std::to_string(getpid()));
  CHECK(rc == 0);
  CHECK(out.find("woke default") != std::string::npos);
  CHECK(holds(a, 4 * kMiB, 77));

  std::tie(rc, out) = run_cli(dir, "sleep nosuchtag");
  CHECK(rc == 1);
  CHECK(out.find("unknown_tag") != std::string::npos);

  std::tie(rc, out) = run_cli(dir, "tag kv_cache --socket " + server.path());
  CHECK(rc == 0);
  CHECK(engine.phase_tag() == "kv_cache");

  std::tie(rc, out) = run_cli(dir, "regions");
  CHECK(rc == 0);
  CHECK(out.find("CALL SITE") != std::string::npos);

  std::tie(rc, out) = run_cli(dir, "ps --json");
  CHECK(rc == 0);
  CHECK(Json::parse(out)["processes"].size() == 1);

  std::tie(rc, out) = run_cli(dir, "sleep --bogus");
  CHECK(rc == 2);
  std::tie(rc, out) = run_cli(dir, "--help");
  CHECK(rc == 0);
  CHECK(out.find("Usage: gpusleep") != std::string::npos);
  std::tie(rc, out) = run_cli(dir, "status --pid abc");
  CHECK(rc == 2);
  std::tie(rc, out) = run_cli(dir, "status --pid 999999999");
  CHECK(rc == 1);
  CHECK(out.find("999999999") != std::string::npos);
  std::tie(rc, out) = run_cli(tmp.path + "/empty", "status");
  CHECK(rc == 1);
  CHECK(out.find("no process") != std::string::npos);
}

TEST_CASE("ps removes the sockets of processes that are gone", "[cli]") {
  TempDir tmp;
  const std::string dir = tmp.path + "/run";
  std::string error;
  REQUIRE(ensure_private_dir(dir, true, &error));
  // A socket left by a killed process: bound, never unlinked, nobody listening.
  pid_t child = fork();
  if (child == 0) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string path = socket_path(dir, getpid());
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  const std::string stale = socket_path(dir, child);
  REQUIRE(fs::exists(stale));
  auto [rc, out] = run_cli(dir, "ps");
  CHECK(rc == 0);
  CHECK(out.find("removed stale socket") != std::string::npos);
  CHECK_FALSE(fs::exists(stale));
}

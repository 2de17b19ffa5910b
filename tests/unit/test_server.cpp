// The control server over real Unix sockets: placement and permissions, bounded reads, clients
// that misbehave, and the CLI talking to it.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "protocol/client.h"
#include "fake_gpu.h"
#include "server/handler.h"
#include "protocol/line_io.h"
#include "protocol/runtime_dir.h"
#include "server/server.h"

using namespace gpusleep;
using namespace gpusleep::test;
using protocol::Json;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/gpusleep-test-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string path;
};

int raw_connect(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  return fd;
}

Json read_reply(int fd) {
  LineReader reader(fd, protocol::kMaxReply);
  std::string line;
  REQUIRE(reader.read_line(&line, 5000) == ReadResult::kLine);
  return Json::parse(line);
}

std::string echo_handler(std::string_view line) {
  return protocol::encode(protocol::ok_reply(nullptr, Json{{"echo", std::string(line)}}));
}

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

TEST_CASE("the server listens on DIR/PID.sock, mode 0600 in a 0700 directory, and removes it",
          "[server]") {
  TempDir tmp;
  std::string dir = tmp.path + "/run";
  Server server(ServerConfig{dir}, echo_handler);
  std::string error;
  REQUIRE(server.start(&error));
  struct stat st;
  REQUIRE(stat(dir.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  CHECK(server.path() == socket_path(dir, getpid()));
  REQUIRE(stat(server.path().c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0600);

  auto client = Client::connect(server.path(), &error);
  REQUIRE(client);
  Json reply;
  REQUIRE(client->call(protocol::make_request("status"), &reply, &error, 5000));
  CHECK(reply["result"]["echo"].get<std::string>().find("\"status\"") != std::string::npos);
  const std::string path = server.path();
  server.stop();
  CHECK_FALSE(fs::exists(path));
}

TEST_CASE("a runtime directory open to others, or not a directory, is refused", "[server]") {
  TempDir tmp;
  std::string error;
  std::string loose = tmp.path + "/loose";
  mkdir(loose.c_str(), 0755);
  chmod(loose.c_str(), 0755);
  Server server(ServerConfig{loose}, echo_handler);
  CHECK_FALSE(server.start(&error));
  CHECK(error.find("755") != std::string::npos);
  std::string file = tmp.path + "/file";
  fclose(fopen(file.c_str(), "w"));
  CHECK_FALSE(ensure_private_dir(file, true, &error));
  CHECK(error.find("not a directory") != std::string::npos);
  std::string link = tmp.path + "/link";
  std::string real = tmp.path + "/real";
  mkdir(real.c_str(), 0700);
  symlink(real.c_str(), link.c_str());
  CHECK_FALSE(ensure_private_dir(link, true, &error));
}

TEST_CASE("an oversized request gets message_too_large and the server keeps serving", "[server]") {
  TempDir tmp;
  ServerConfig config{tmp.path + "/run"};
  config.max_message = 1024;
  Server server(config, echo_handler);
  std::string error;
  REQUIRE(server.start(&error));
  int fd = raw_connect(server.path());
  std::string big(5000, 'x');
  write_all(fd, big);
  Json r = read_reply(fd);
  CHECK(r["error"]["code"] == "message_too_large");
  char c;
  CHECK(recv(fd, &c, 1, 0) <= 0);  // then the connection is closed
  close(fd);
  auto client = Client::connect(server.path(), &error);
  REQUIRE(client);
  Json reply;
  CHECK(client->call(protocol::make_request("status"), &reply, &error, 5000));
}

TEST_CASE("a client that leaves mid-request harms nothing", "[server]") {
  TempDir tmp;
  std::atomic<int> handled{0};
  Server server(ServerConfig{tmp.path + "/run"}, [&](std::string_view line) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    ++handled;
    return echo_handler(line);
  });
  std::string error;
  REQUIRE(server.start(&error));
  for (int i = 0; i < 3; ++i) {
    int fd = raw_connect(server.path());
    write_all(fd, "{\"v\":1,\"op\":\"sleep\"}\n");
    close(fd);  // gone before the reply: the server's write must not raise SIGPIPE
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (handled.load() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(handled.load() == 3);
  auto client = Client::connect(server.path(), &error);
  REQUIRE(client);
  Json reply;
  CHECK(client->call(protocol::make_request("status"), &reply, &error, 5000));
}

TEST_CASE("connections beyond the limit are told the server is busy", "[server]") {
  TempDir tmp;
  ServerConfig config{tmp.path + "/run"};
  config.max_connections = 2;
  Server server(config, echo_handler);
  std::string error;
  REQUIRE(server.start(&error));
  int a = raw_connect(server.path());
  int b = raw_connect(server.path());
  while (server.active_connections() < 2)
    std::this_thread::yield();
  int c = raw_connect(server.path());
  CHECK(read_reply(c)["error"]["code"] == "busy");
  close(a);
  close(b);
  close(c);
}

TEST_CASE("lines are split across reads and joined within them", "[server]") {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  write_all(sv[1], "first\r\nsec");
  LineReader reader(sv[0], 64);
  std::string line;
  REQUIRE(reader.read_line(&line, 1000) == ReadResult::kLine);
  CHECK(line == "first");
  CHECK(reader.read_line(&line, 50) == ReadResult::kTimeout);
  write_all(sv[1], "ond\nthird\n");
  REQUIRE(reader.read_line(&line, 1000) == ReadResult::kLine);
  CHECK(line == "second");
  REQUIRE(reader.read_line(&line, 1000) == ReadResult::kLine);
  CHECK(line == "third");
  write_all(sv[1], std::string(100, 'y'));
  CHECK(reader.read_line(&line, 1000) == ReadResult::kTooLong);
  close(sv[1]);
  LineReader other(sv[0], 64);
  close(sv[0]);
}

TEST_CASE("the CLI drives a real server: status, sleep, wake, tag, errors and exit codes",
          "[server][cli]") {
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

TEST_CASE("ps removes the sockets of processes that are gone", "[server][cli]") {
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

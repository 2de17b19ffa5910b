// The control server over real Unix sockets: placement and permissions, bounded reads, and
// clients that misbehave.
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

#include "fake_gpu.h"
#include "protocol/client.h"
#include "protocol/line_io.h"
#include "protocol/runtime_dir.h"
#include "server/handler.h"
#include "server/server.h"
#include "temp_dir.h"

using namespace gpusleep;
using namespace gpusleep::test;
using protocol::Json;
namespace fs = std::filesystem;

namespace {

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

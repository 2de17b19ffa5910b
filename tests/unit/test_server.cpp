// The control server over real Unix sockets: placement and permissions, bounded reads, and
// clients that misbehave.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/resource.h>
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
#include <vector>

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

TEST_CASE("a client that never reads its replies is dropped at the write deadline", "[server]") {
  TempDir tmp;
  ServerConfig config{tmp.path + "/run"};
  config.max_connections = 1;
  config.write_timeout_ms = 300;
  Server server(config, [](std::string_view line) {
    const std::size_t size = line == "big" ? std::size_t{16} << 20 : 1;
    return protocol::encode(protocol::ok_reply(nullptr, Json{{"blob", std::string(size, 'x')}}));
  });
  std::string error;
  REQUIRE(server.start(&error));
  int hog = raw_connect(server.path());
  write_all(hog, "big\n");  // and never reads: 16 MiB cannot fit in the socket's buffers
  // The slot is freed at the deadline; the next controller is served, not told `busy`.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (server.active_connections() == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();  // until the hog is being served
  while (server.active_connections() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(server.active_connections() == 0);
  int next = raw_connect(server.path());
  write_all(next, "{}\n");
  LineReader reader(next, protocol::kMaxReply);
  std::string line;
  REQUIRE(reader.read_line(&line, 10000) == ReadResult::kLine);
  INFO(line.substr(0, 200));
  CHECK(Json::parse(line)["ok"] == true);
  close(next);
  close(hog);
}

TEST_CASE("an empty line gets a reply as every line does", "[server]") {
  TempDir tmp;
  Server server(ServerConfig{tmp.path + "/run"}, echo_handler);
  std::string error;
  REQUIRE(server.start(&error));
  int fd = raw_connect(server.path());
  write_all(fd, "\n\r\n");
  // One reader for both replies: they may come in one read.
  LineReader reader(fd, protocol::kMaxReply);
  for (int i = 0; i < 2; ++i) {
    std::string line;
    REQUIRE(reader.read_line(&line, 5000) == ReadResult::kLine);
    CHECK(Json::parse(line)["result"]["echo"] == "");
  }
  close(fd);
}

TEST_CASE("out of file descriptors, a connection is answered busy and accepting does not spin",
          "[server]") {
  TempDir tmp;
  Server server(ServerConfig{tmp.path + "/run"}, echo_handler);
  std::string error;
  REQUIRE(server.start(&error));
  const int client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(client >= 0);
  rlimit saved{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &saved) == 0);
  // Every descriptor below a lowered limit taken: the server cannot accept.
  rlimit low = saved;
  low.rlim_cur = static_cast<rlim_t>(client + 8);
  REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
  std::vector<int> filler;
  for (int fd; (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;)
    filler.push_back(fd);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", server.path().c_str());
  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  LineReader reader(client, protocol::kMaxReply);
  std::string line;
  const ReadResult got = reader.read_line(&line, 5000);
  // Hold the process out of descriptors a while longer: the acceptor must wait, not spin.
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  rusage after{};
  getrusage(RUSAGE_SELF, &after);
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int fd : filler)
    close(fd);
  REQUIRE(setrlimit(RLIMIT_NOFILE, &saved) == 0);
  close(client);
  REQUIRE(got == ReadResult::kLine);
  CHECK(Json::parse(line)["error"]["code"] == "busy");
  CHECK(server.accept_failures() >= 1);
  auto cpu = [](const rusage& u) {
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  };
  CHECK(cpu(after) - cpu(before) < 0.5 * wall);  // a spinning acceptor takes all of it
  // With descriptors back, the server serves again.
  auto c = Client::connect(server.path(), &error);
  REQUIRE(c);
  Json reply;
  CHECK(c->call(protocol::make_request("status"), &reply, &error, 5000));
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

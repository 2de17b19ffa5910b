// Request handling inside the library: one protocol request in, one reply out, by calling the
// engine. Never throws; any failure becomes an error reply.
#pragma once

#include <string>
#include <string_view>

#include "protocol.h"

namespace gpusleep {

class Engine;

class Handler {
 public:
  explicit Handler(Engine* engine) : engine_(engine) {}  // null engine: every op is unavailable

  // Parses, dispatches and encodes: the LineHandler the server runs.
  std::string handle_line(std::string_view line);
  protocol::Json handle(const protocol::Request& request);

 private:
  protocol::Json status(const protocol::Request& request);
  protocol::Json regions(const protocol::Request& request);
  protocol::Json sleep(const protocol::Request& request);
  protocol::Json wake(const protocol::Request& request);
  protocol::Json tag(const protocol::Request& request);
  protocol::Json policy(const protocol::Request& request);

  Engine* engine_;
};

}  // namespace gpusleep

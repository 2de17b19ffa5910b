// Request handling inside the library: one protocol request in, one reply out, by calling the
// engine. Never throws; any failure becomes an error reply.
#pragma once

#include <string>
#include <string_view>

#include "protocol/protocol.h"

namespace gpusleep {

class Engine;
struct RegionInfo;

// What `regions` shows as a region's call site, groups by and `retag --call-site` matches: its
// innermost `depth` Python frames ("a < b": a called from b), else the native caller of the
// allocation function.
std::string call_site_key(const RegionInfo& region, int depth);

class Handler {
 public:
  // Null engine: every op is unavailable. `rules_file`: the GPUSLEEP_RULES file, read again on a
  // "reload" (requests never name files).
  explicit Handler(Engine* engine, std::string rules_file = "")
      : engine_(engine), rules_file_(std::move(rules_file)) {}

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
  protocol::Json rules(const protocol::Request& request);
  protocol::Json retag(const protocol::Request& request);
  // An invalid_argument reply to `request`.
  static protocol::Json invalid(const protocol::Request& request, const std::string& message);

  Engine* engine_;
  std::string rules_file_;
};

}  // namespace gpusleep

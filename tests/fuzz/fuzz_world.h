// What the fuzz targets over requests share: a live engine over the emulated driver with regions
// in two tags, its request handler, and the check that a reply is one line of this protocol.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "core/engine.h"
#include "driver/cuda_driver.h"
#include "protocol/protocol.h"
#include "server/handler.h"

namespace fuzz {

struct World {
  std::unique_ptr<gpusleep::CudaDriver> driver;
  std::unique_ptr<gpusleep::Engine> engine;
  std::unique_ptr<gpusleep::Handler> handler;
};

inline World& world() {
  static World* w = [] {
    auto* x = new World();
    std::string error;
    x->driver = gpusleep::CudaDriver::load(FAKECUDA_LIBRARY, &error);
    if (!x->driver) {
      std::fprintf(stderr, "fuzz: %s\n", error.c_str());
      std::abort();
    }
    gpusleep::Options options;
    options.eager_mirrors = false;
    options.copy_chunk = 2u << 20;
    x->engine = std::make_unique<gpusleep::Engine>(*x->driver, options);
    for (const char* tag : {"weights", "kv_cache"}) {
      x->engine->set_phase_tag(tag);
      gpusleep::DevicePtr va = 0;
      x->engine->allocate(std::size_t{4} << 20, 0, 0, &va);
    }
    x->engine->set_phase_tag("");
    x->handler = std::make_unique<gpusleep::Handler>(x->engine.get());
    return x;
  }();
  return *w;
}

// Sends one request line through the handler; aborts unless exactly one protocol reply comes.
inline void handle_and_check(std::string_view line) {
  std::string reply = world().handler->handle_line(line);
  if (reply.empty() || reply.back() != '\n' || reply.find('\n') != reply.size() - 1) {
    std::abort();  // one reply line per request
  }
  gpusleep::protocol::Json parsed;
  std::string error;
  if (!gpusleep::protocol::parse_reply(reply.substr(0, reply.size() - 1), &parsed, &error)) {
    std::fprintf(stderr, "fuzz: not a reply: %s (%s)\n", reply.c_str(), error.c_str());
    std::abort();
  }
}

}  // namespace fuzz

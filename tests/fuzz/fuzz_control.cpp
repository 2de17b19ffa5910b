// libFuzzer target: arbitrary bytes as control requests, one per line, through the protocol
// parser and the request handlers of a live engine over the emulated driver (regions allocated,
// so sleep, wake, retag and rules do real work). Every line must get exactly one reply that is a
// protocol reply; nothing may crash, hang or leak (AddressSanitizer, UndefinedBehaviorSanitizer).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "driver/cuda_driver.h"
#include "core/engine.h"
#include "server/handler.h"
#include "protocol/protocol.h"

namespace {

struct World {
  std::unique_ptr<gpusleep::CudaDriver> driver;
  std::unique_ptr<gpusleep::Engine> engine;
  std::unique_ptr<gpusleep::Handler> handler;
};

World& world() {
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > (64u << 10)) return 0;  // the server refuses longer lines before parsing
  World& w = world();
  std::string_view input(reinterpret_cast<const char*>(data), size);
  while (!input.empty()) {
    std::size_t nl = input.find('\n');
    std::string_view line = input.substr(0, nl);
    input = nl == std::string_view::npos ? std::string_view() : input.substr(nl + 1);
    std::string reply = w.handler->handle_line(line);
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
  return 0;
}

// The library's process-wide state: options, driver, engine and control server, set up on the
// first intercepted call and never torn down (the host's exit path must not depend on it).
#pragma once

#include <memory>
#include <string>

#include "core/options.h"

namespace gpusleep {

class CudaDriver;
class Engine;
class Handler;
class Server;

class Runtime {
 public:
  // The runtime, set up on first use. Null when the library is disabled or the driver could not
  // be loaded: every allocation then passes through.
  static Runtime* get();

  Engine& engine() { return *engine_; }
  const Options& options() const { return options_; }

 private:
  Runtime() = default;
  bool init();
  static void at_exit();
  static void after_fork_in_child();

  Options options_;
  std::unique_ptr<CudaDriver> driver_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Handler> handler_;
  std::unique_ptr<Server> server_;
};

}  // namespace gpusleep

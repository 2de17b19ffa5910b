// The library's process-wide state: options, driver, engine and control server, set up on the
// first intercepted call and never torn down (the host's exit path must not depend on it).
#pragma once

#include <memory>
#include <string>

#include "core/options.h"

namespace gpusleep {

class CudaDriver;
class Driver;
class Engine;
class Handler;
class Server;

// The recursion guard every hook holds. While a hook runs on a thread, the calls the library
// itself makes there (and those the real functions make into other hooks) must reach the real
// functions untouched: only the outermost guard on a thread lets its holder reach the runtime.
class Reentry {
 public:
  Reentry();
  ~Reentry();
  Reentry(const Reentry&) = delete;
  Reentry& operator=(const Reentry&) = delete;
  // True for the outermost guard on the thread.
  bool first() const { return first_; }

 private:
  bool first_;
};

class Runtime {
 public:
  // The runtime, set up on first use, when `guard` is the outermost on its thread. Null inside
  // another hook, when the library is disabled or when the driver could not be loaded: the call
  // then goes to the real function.
  static Runtime* enter(const Reentry& guard);

  Engine& engine() { return *engine_; }
  Driver& driver();
  const Options& options() const { return options_; }

 private:
  Runtime() = default;
  static Runtime* get();
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

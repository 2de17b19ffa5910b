// Process setup. Everything here runs inside someone else's program: failures are logged and the
// library steps aside (pass-through), it never exits or throws.
#include "host/process.h"

#include <pthread.h>
#include <unistd.h>

#include <cstdlib>

#include "base/log.h"
#include "core/engine.h"
#include "core/gate.h"
#include "core/rules.h"
#include "driver/cuda_driver.h"
#include "protocol/runtime_dir.h"
#include "server/handler.h"
#include "server/server.h"

extern char** environ;

namespace gpusleep {
namespace {
Runtime* g_runtime = nullptr;
thread_local bool t_inside = false;
}  // namespace

Reentry::Reentry() : first_(!t_inside) {
  t_inside = true;
}

Reentry::~Reentry() {
  if (first_) t_inside = false;
}

Runtime* Runtime::enter(const Reentry& guard) {
  return guard.first() ? get() : nullptr;
}

Driver& Runtime::driver() {
  return *driver_;
}

Runtime* Runtime::get() {
  static Runtime* instance = [] {
    auto* r = new Runtime();  // never deleted: see runtime.h
    try {
      if (r->init()) {
        g_runtime = r;
        return r;
      }
    } catch (const std::exception& e) {
      GS_ERROR("setup failed: %s; allocations pass through", e.what());
    } catch (...) {
      GS_ERROR("setup failed; allocations pass through");
    }
    return static_cast<Runtime*>(nullptr);
  }();
  return instance;
}

bool Runtime::init() {
  std::vector<std::string> problems;
  options_ = load_options(environ, &problems);
  log_set_level(options_.log_level);
  for (const std::string& p : problems)
    GS_WARN("%s", p.c_str());
  if (options_.disable) {
    GS_INFO("disabled by GPUSLEEP_DISABLE; allocations pass through");
    return false;
  }
  std::string error;
  driver_ = CudaDriver::load(options_.driver_library, &error);
  if (driver_ == nullptr) {
    GS_ERROR("%s; allocations pass through", error.c_str());
    return false;
  }
  // The node's host budget is kept beside the control sockets, in the user's private directory.
  const std::string dir = default_runtime_dir(options_.runtime_dir);
  if (ensure_private_dir(dir, true, &error)) {
    options_.host_budget_ledger = dir + "/host-budget";
  } else {
    GS_WARN("%s; the host budget is this process's alone", error.c_str());
  }
  Gate& gate = Gate::process();
  gate.set_mode(options_.gate);
  engine_ = std::make_unique<Engine>(*driver_, options_, &gate);
  Engine* engine = engine_.get();
  // GPUSLEEP_GATE=wake: GPU work submitted while asleep wakes every tag (on the gate's thread).
  gate.set_waker([engine](std::string* error) {
    OpResult r = engine->wake(WakeRequest{});
    if (!r.ok) *error = r.error.message;
    return r.ok;
  });
  if (!options_.rules_file.empty()) {
    std::shared_ptr<const RuleSet> rules;
    if (load_rules_file(options_.rules_file, &rules, &error)) {
      engine_->set_rules(std::move(rules));
      GS_INFO("tagging rules from %s", options_.rules_file.c_str());
    } else {
      GS_ERROR("tagging rules not loaded: %s", error.c_str());
    }
  }
  if (options_.control) {
    handler_ = std::make_unique<Handler>(engine_.get(), options_.rules_file);
    ServerConfig config;
    config.dir = dir;
    config.max_message = options_.max_message;
    Handler* handler = handler_.get();
    server_ = std::make_unique<Server>(
        config, [handler](std::string_view line) { return handler->handle_line(line); });
    if (server_->start(&error)) {
      GS_INFO("control socket %s", server_->path().c_str());
      std::atexit(&Runtime::at_exit);
      pthread_atfork(nullptr, nullptr, &Runtime::after_fork_in_child);
    } else {
      GS_ERROR("no control channel: %s", error.c_str());
      server_.reset();
    }
  }
  return true;
}

void Runtime::at_exit() {
  if (g_runtime != nullptr && g_runtime->server_ != nullptr) g_runtime->server_->abandon();
}

// The server's threads do not exist in a child; its socket belongs to the parent. The child keeps
// its regions' bookkeeping but gets no control channel.
void Runtime::after_fork_in_child() {
  if (g_runtime == nullptr || g_runtime->server_ == nullptr) return;
  g_runtime->server_->forget_after_fork();
  GS_INFO("forked child: the control channel stays with the parent");
}

}  // namespace gpusleep

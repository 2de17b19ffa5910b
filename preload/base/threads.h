// Helper threads started inside the host process.
#pragma once

#include <functional>
#include <thread>

namespace gpusleep {

// Starts a thread with every signal blocked, so the host's signals (SIGINT, SIGCHLD, ...) keep
// reaching the host's own threads and never ours.
std::thread start_quiet_thread(std::function<void()> fn);

}  // namespace gpusleep

// Quiet threads: the signal mask is inherited from the creating thread, so block, create, restore.
#include "base/threads.h"

#include <pthread.h>
#include <signal.h>

namespace gpusleep {

std::thread start_quiet_thread(std::function<void()> fn) {
  sigset_t all;
  sigset_t saved;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &saved);
  std::thread t(std::move(fn));
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  return t;
}

}  // namespace gpusleep

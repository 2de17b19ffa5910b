// Creates the physical memory of a wake's regions, in order, ahead of the thread that maps them:
// on a helper thread when there are enough regions to be worth one, so that creation (about a
// quarter of the driver's time per region) overlaps mapping, access and the restores.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "driver/driver.h"

namespace gpusleep {

class HandleMaker {
 public:
  // `create(i, &handle)` makes item i's memory. With `threaded`, a helper thread calls it for
  // 0, 1, ... in order, after `thread_init`, until one fails or stop(); otherwise get() calls it.
  HandleMaker(std::size_t count, bool threaded,
              std::function<DrvStatus(std::size_t, PhysHandle*)> create,
              std::function<void()> thread_init = nullptr);
  // Stops and waits for the helper.
  ~HandleMaker();
  HandleMaker(const HandleMaker&) = delete;
  HandleMaker& operator=(const HandleMaker&) = delete;

  // Item i's handle, waiting for it (or, without a helper, making the items up to it). On
  // failure, the status of the create that failed (for item `*failed` <= i) and no handle.
  DrvStatus get(std::size_t i, PhysHandle* handle, std::size_t* failed);
  // Stops creating (a create under way finishes) and waits for the helper. Afterwards handles()
  // holds every handle made, 0 for the rest; the caller owns them.
  void stop();
  const std::vector<PhysHandle>& handles() const { return handles_; }

 private:
  void run();
  // Records the outcome of item i's create and wakes get(). Caller holds mu_.
  void publish_locked(std::size_t i, DrvStatus rc, PhysHandle handle);

  const std::function<DrvStatus(std::size_t, PhysHandle*)> create_;
  const std::function<void()> thread_init_;
  std::vector<PhysHandle> handles_;  // [0, made_) published under mu_
  std::mutex mu_;
  std::condition_variable cv_;
  std::size_t made_ = 0;
  DrvStatus failure_ = kDrvOk;  // set once, for item made_
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace gpusleep

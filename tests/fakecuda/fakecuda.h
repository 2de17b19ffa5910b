/* Test controls of the emulated CUDA driver (the libcuda.so.1 that fake_driver.h describes). */
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct FakeCudaStats {
  uint64_t creates, releases, maps, unmaps, syncs;
  uint64_t host_registrations, host_unregistrations, registered_bytes;
  uint64_t pinned_copy_bytes, pageable_copy_bytes;
  uint64_t events_created, events_destroyed;
  uint64_t launches;
};

/* A kernel of the emulated driver (a CUfunction): a host function run by the launching thread
 * over device memory, which the emulated driver keeps in host memory. */
typedef void (*fakecuda_kernel)(void** params);
/* An executable graph of the emulated driver (a CUgraphExec): one kernel and its parameters. */
struct fakecuda_graph {
  fakecuda_kernel kernel;
  void** params;
};
/* Whether a kernel faulted on memory not mapped for it, which loses the context for good. */
int fakecuda_context_lost(void);

/* Clears injected faults and counters (allocations stay). */
void fakecuda_reset(void);
void fakecuda_get_stats(struct FakeCudaStats* out);
/* After `skip` more successful calls of `function` (a driver symbol name such as "cuMemCreate"),
 * the next `count` calls return `error`. */
void fakecuda_fail(const char* function, int skip, int count, int error);
/* Device memory in use on `device` by every process sharing the state, and its capacity. */
uint64_t fakecuda_used_bytes(int device);
uint64_t fakecuda_capacity_bytes(int device); /* 0: no such device */
/* Sets the capacity of `device` (for every process sharing the state). */
void fakecuda_set_capacity(int device, uint64_t bytes);
/* Whether devices report virtual memory management support (FAKECUDA_NO_VMM sets it off). */
void fakecuda_set_vmm(int supported);
/* Emulates a stream capture on the calling thread, begun in global mode (1) or relaxed mode (0).
 * While it lasts, a potentially unsafe call (host registration) from a thread whose capture mode
 * is not relaxed fails with CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and invalidates the capture, and
 * a context synchronization always does. fakecuda_end_capture returns 1 if it is still valid. */
void fakecuda_begin_capture(int global_mode);
int fakecuda_end_capture(void);
/* Every copy call sleeps this long first (0: none; also FAKECUDA_COPY_DELAY_US), so that a sleep
 * or wake lasts long enough for tests to act during it. */
void fakecuda_set_copy_delay_us(unsigned microseconds);

/* Whether a kernel running on `device` may read and write [ptr, ptr+bytes): peer access for
 * plain allocations, per-device access of virtual-memory mappings. */
int fakecuda_kernel_access(int device, uint64_t ptr, uint64_t bytes);
/* Whether cuCtxEnablePeerAccess let `accessor` reach `owner`'s plain allocations. */
int fakecuda_peer_enabled(int accessor, int owner);

#ifdef __cplusplus
}
#endif

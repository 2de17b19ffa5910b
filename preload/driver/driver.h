// The narrow interface through which the core reaches the GPU. CudaDriver implements it over the
// real CUDA driver library; tests run the same core over an emulated one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace gpusleep {

using DevicePtr = std::uint64_t;   // a device virtual address
using PhysHandle = std::uint64_t;  // physical device memory, as returned by create()
using Context = void*;             // an execution context (opaque)
using Stream = void*;              // a copy stream (opaque)
using Event = void*;               // a point in a stream (opaque)

// Every call returns a driver status: 0 is success; other values are CUDA driver error codes.
using DrvStatus = int;
inline constexpr DrvStatus kDrvOk = 0;
inline constexpr DrvStatus kDrvOutOfMemory = 2;     // CUDA_ERROR_OUT_OF_MEMORY
inline constexpr DrvStatus kDrvNotSupported = 801;  // CUDA_ERROR_NOT_SUPPORTED

class Driver {
 public:
  virtual ~Driver() = default;

  // Makes a context for `device` current on the calling thread and returns it. Keeps the
  // caller's current context when it belongs to `device`; otherwise uses the device's primary
  // context (the one the CUDA runtime uses).
  virtual DrvStatus ensure_context(int device, Context* ctx) = 0;
  // The calling thread's current context (null when none).
  virtual DrvStatus current_context(Context* ctx) = 0;
  // The device (ordinal) of the calling thread's current context; an error when none is current.
  virtual DrvStatus current_device(int* device) = 0;
  // The device (ordinal) of `ctx`. Leaves the calling thread's current context as it was.
  virtual DrvStatus context_device(Context ctx, int* device) = 0;
  // Makes `ctx` current on the calling thread (null: none).
  virtual DrvStatus set_context(Context ctx) = 0;
  // Blocks until all work submitted to `ctx`, from any thread, has completed. Leaves `ctx` current.
  virtual DrvStatus synchronize(Context ctx) = 0;

  // Lets the calling thread make calls that a stream capture in another thread would otherwise
  // forbid (cuMemHostRegister and its kin invalidate a global-mode capture). Only for the
  // library's own threads, which never touch the host's captured streams.
  virtual DrvStatus relax_capture_mode() = 0;
  // Whether the calling thread's stream-capture mode is relaxed (as PyTorch sets it around
  // allocations made while it captures a CUDA graph). Leaves the mode as it was.
  virtual DrvStatus thread_capture_relaxed(bool* relaxed) = 0;

  // Whether `device` supports the virtual memory management calls below.
  virtual DrvStatus vmm_supported(int device, bool* supported) = 0;
  // Minimum granularity of create()/map() sizes and of reservation alignment on `device`.
  virtual DrvStatus granularity(int device, std::size_t* bytes) = 0;
  // Free and total device memory of `device` as the driver counts it (all processes).
  // Precondition: a context of `device` exists in this process.
  virtual DrvStatus memory_info(int device, std::size_t* free_bytes, std::size_t* total_bytes) = 0;

  // Reserves `size` bytes of device address space aligned to `alignment`; nothing is mapped.
  virtual DrvStatus reserve(std::size_t size, std::size_t alignment, DevicePtr* va) = 0;
  // Returns a reservation. Precondition: nothing in it is mapped.
  virtual DrvStatus unreserve(DevicePtr va, std::size_t size) = 0;
  // Creates `size` bytes of physical memory on `device` (size a multiple of the granularity),
  // GPUDirect RDMA capable where the device supports that. kDrvOutOfMemory when none is left.
  virtual DrvStatus create(int device, std::size_t size, PhysHandle* handle) = 0;
  // Creates `size` bytes of physical memory with the allocation properties `prop` (the driver's
  // property structure, `prop_size` bytes, as a program passed it), for memory a program created.
  virtual DrvStatus create_like(const void* prop, std::size_t prop_size, std::size_t size,
                                PhysHandle* handle) = 0;
  // Drops the handle; the memory is freed once no mapping uses it.
  virtual DrvStatus release(PhysHandle handle) = 0;
  // Maps all of `handle` at `va` (inside a reservation). The mapping is inaccessible until
  // set_access().
  virtual DrvStatus map(DevicePtr va, std::size_t size, PhysHandle handle) = 0;
  // Unmaps exactly a range that one map() call mapped; the range returns to its reservation.
  virtual DrvStatus unmap(DevicePtr va, std::size_t size) = 0;
  // Grants `device` read-write access to a mapped range.
  virtual DrvStatus set_access(DevicePtr va, std::size_t size, int device) = 0;
  // Sets `device`'s access to a mapped range to `flags` (the driver's access flags).
  virtual DrvStatus set_access_flags(DevicePtr va, std::size_t size, int device, int flags) = 0;

  // Page-locks `size` bytes of host memory at `ptr` for fast copies from any context.
  virtual DrvStatus host_register(void* ptr, std::size_t size) = 0;
  // Undoes host_register() of the range starting at `ptr`.
  virtual DrvStatus host_unregister(void* ptr) = 0;

  // Creates a stream in the current context that does not synchronize with the legacy stream.
  virtual DrvStatus stream_create(Stream* stream) = 0;
  virtual DrvStatus stream_destroy(Stream stream) = 0;
  // Blocks until all work on `stream` has completed.
  virtual DrvStatus stream_synchronize(Stream stream) = 0;
  // Queues a copy on `stream` (of the current context). `host` should be registered memory.
  virtual DrvStatus copy_to_host(void* host, DevicePtr src, std::size_t size, Stream stream) = 0;
  virtual DrvStatus copy_to_device(DevicePtr dst, const void* host, std::size_t size,
                                   Stream stream) = 0;

  // Records on `stream` a new event, reached when the work queued on the stream so far is done.
  virtual DrvStatus event_record(Stream stream, Event* event) = 0;
  // Blocks until `event` is reached; the error of failed work before it, if any.
  virtual DrvStatus event_synchronize(Event event) = 0;
  virtual DrvStatus event_destroy(Event event) = 0;

  // "CUDA_ERROR_OUT_OF_MEMORY: out of memory"-style text for a status.
  virtual std::string describe(DrvStatus status) = 0;
};

}  // namespace gpusleep

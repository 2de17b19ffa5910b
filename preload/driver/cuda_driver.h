// Driver implemented over the CUDA driver library, loaded at run time (never linked), so the
// library and its tests start on machines without a GPU.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "driver/driver.h"

namespace gpusleep {

struct DriverApi;  // the resolved function table

class CudaDriver final : public Driver {
 public:
  // Loads `library` (a name searched like dlopen does, or a path) and initializes the driver.
  // Returns nullptr with the reason in *error when the library, a required symbol or cuInit fails.
  static std::unique_ptr<CudaDriver> load(const std::string& library, std::string* error);
  ~CudaDriver() override;

  DrvStatus ensure_context(int device, Context* ctx) override;
  DrvStatus current_context(Context* ctx) override;
  DrvStatus current_device(int* device) override;
  DrvStatus context_device(Context ctx, int* device) override;
  DrvStatus set_context(Context ctx) override;
  DrvStatus synchronize(Context ctx) override;
  DrvStatus relax_capture_mode() override;
  DrvStatus thread_capture_relaxed(bool* relaxed) override;
  DrvStatus vmm_supported(int device, bool* supported) override;
  DrvStatus granularity(int device, std::size_t* bytes) override;
  DrvStatus memory_info(int device, std::size_t* free_bytes, std::size_t* total_bytes) override;
  DrvStatus reserve(std::size_t size, std::size_t alignment, DevicePtr* va) override;
  DrvStatus unreserve(DevicePtr va, std::size_t size) override;
  DrvStatus create(int device, std::size_t size, PhysHandle* handle) override;
  DrvStatus create_like(const void* prop, std::size_t prop_size, std::size_t size,
                        PhysHandle* handle) override;
  DrvStatus release(PhysHandle handle) override;
  DrvStatus map(DevicePtr va, std::size_t size, PhysHandle handle) override;
  DrvStatus unmap(DevicePtr va, std::size_t size) override;
  DrvStatus set_access(DevicePtr va, std::size_t size, int device) override;
  DrvStatus set_access_flags(DevicePtr va, std::size_t size, int device, int flags) override;
  DrvStatus host_register(void* ptr, std::size_t size) override;
  DrvStatus host_unregister(void* ptr) override;
  DrvStatus stream_create(Stream* stream) override;
  DrvStatus stream_destroy(Stream stream) override;
  DrvStatus stream_synchronize(Stream stream) override;
  DrvStatus copy_to_host(void* host, DevicePtr src, std::size_t size, Stream stream) override;
  DrvStatus copy_to_device(DevicePtr dst, const void* host, std::size_t size,
                           Stream stream) override;
  DrvStatus event_record(Stream stream, Event* event) override;
  DrvStatus event_synchronize(Event event) override;
  DrvStatus event_destroy(Event event) override;
  std::string describe(DrvStatus status) override;

 private:
  explicit CudaDriver(std::unique_ptr<DriverApi> api);
  DrvStatus primary_context(int device, Context* ctx);
  DrvStatus device_handle(int device, int* handle);
  DrvStatus ordinal_of(int handle, int* device);

  std::unique_ptr<DriverApi> api_;
  std::mutex mu_;
  std::vector<Context> primary_;  // retained primary contexts by ordinal (null: not yet)
  std::vector<int> rdma_;         // per ordinal: -1 unknown, 0 no, 1 yes
};

}  // namespace gpusleep

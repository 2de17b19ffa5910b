// The emulated driver: streams, events, copies, kernels and graphs. Copies complete before they
// return; a kernel runs on the launching thread and a fault inside it loses the context.
#include <setjmp.h>
#include <signal.h>

#include <cstring>
#include <mutex>

#include "fake_driver.h"

using namespace fakecuda;

// ---- streams and copies (copies complete before they return) ----

CUresult CUDAAPI cuStreamCreate(CUstream* stream, unsigned int) {
  FAKE_ENTER("cuStreamCreate");
  if (stream == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  *stream = reinterpret_cast<CUstream>(new int(t_current->device));
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuStreamDestroy(CUstream stream) {
  FAKE_ENTER("cuStreamDestroy_v2");
  delete reinterpret_cast<int*>(stream);
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuStreamSynchronize(CUstream) {
  FAKE_ENTER_WORK("cuStreamSynchronize");
  return CUDA_SUCCESS;
}

// Copies complete before they return, so an event is reached as soon as it is recorded.
CUresult CUDAAPI cuEventCreate(CUevent* event, unsigned int) {
  FAKE_ENTER("cuEventCreate");
  if (event == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  *event = reinterpret_cast<CUevent>(new int(0));
  ++st().stats.events_created;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuEventRecord(CUevent event, CUstream) {
  FAKE_ENTER("cuEventRecord");
  if (event == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuEventSynchronize(CUevent event) {
  FAKE_ENTER_WORK("cuEventSynchronize");
  return event == nullptr ? CUDA_ERROR_INVALID_HANDLE : CUDA_SUCCESS;
}

CUresult CUDAAPI cuEventDestroy(CUevent event) {
  FAKE_ENTER("cuEventDestroy_v2");
  if (event == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  delete reinterpret_cast<int*>(event);
  ++st().stats.events_destroyed;
  return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemcpyDtoHAsync(void* dst, CUdeviceptr src, size_t n, CUstream) {
  copy_delay();
  FAKE_ENTER_WORK("cuMemcpyDtoHAsync_v2");
  return copy_checked(dst, reinterpret_cast<void*>(src), n, src, dst);
}

CUresult CUDAAPI cuMemcpyHtoDAsync(CUdeviceptr dst, const void* src, size_t n, CUstream) {
  copy_delay();
  FAKE_ENTER_WORK("cuMemcpyHtoDAsync_v2");
  return copy_checked(reinterpret_cast<void*>(dst), src, n, dst, src);
}

CUresult CUDAAPI cuMemcpyDtoH(void* dst, CUdeviceptr src, size_t n) {
  FAKE_ENTER_WORK("cuMemcpyDtoH_v2");
  return copy_checked(dst, reinterpret_cast<void*>(src), n, src, dst);
}

CUresult CUDAAPI cuMemcpyHtoD(CUdeviceptr dst, const void* src, size_t n) {
  FAKE_ENTER_WORK("cuMemcpyHtoD_v2");
  return copy_checked(reinterpret_cast<void*>(dst), src, n, dst, src);
}

CUresult CUDAAPI cuMemsetD8(CUdeviceptr dst, unsigned char value, size_t n) {
  FAKE_ENTER_WORK("cuMemsetD8_v2");
  if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (!device_range_ok(dst, n)) return CUDA_ERROR_INVALID_VALUE;
  std::memset(reinterpret_cast<void*>(dst), value, n);
  return CUDA_SUCCESS;
}

// ---- kernels and graphs ----

namespace {

thread_local sigjmp_buf* t_kernel_jump = nullptr;
struct sigaction g_prev_segv;
struct sigaction g_prev_bus;

// A fault inside a kernel ends the kernel; any other goes to the handler the process had.
void on_fault(int sig, siginfo_t* info, void* context) {
  if (t_kernel_jump != nullptr) siglongjmp(*t_kernel_jump, 1);
  const struct sigaction& prev = sig == SIGSEGV ? g_prev_segv : g_prev_bus;
  if ((prev.sa_flags & SA_SIGINFO) != 0 && prev.sa_sigaction != nullptr) {
    prev.sa_sigaction(sig, info, context);
    return;
  }
  if ((prev.sa_flags & SA_SIGINFO) == 0 && prev.sa_handler != SIG_DFL &&
      prev.sa_handler != SIG_IGN) {
    prev.sa_handler(sig);
    return;
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_prev_segv);
    sigaction(SIGBUS, &sa, &g_prev_bus);
  });
}

CUresult run_kernel(const char* name, fakecuda_kernel kernel, void** params) {
  {
    FAKE_ENTER_WORK(name);
    if (t_current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
    ++st().stats.launches;
  }
  if (kernel == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  install_fault_handler();
  sigjmp_buf jump;
  if (sigsetjmp(jump, 1) != 0) {
    t_kernel_jump = nullptr;
    g_context_lost.store(true);
    return CUDA_ERROR_ILLEGAL_ADDRESS;
  }
  t_kernel_jump = &jump;
  kernel(params);
  t_kernel_jump = nullptr;
  return CUDA_SUCCESS;
}

CUresult run_graph(const char* name, CUgraphExec exec) {
  if (exec == nullptr) return CUDA_ERROR_INVALID_VALUE;
  const auto* graph = reinterpret_cast<const fakecuda_graph*>(exec);
  return run_kernel(name, graph->kernel, graph->params);
}

}  // namespace

CUresult CUDAAPI cuLaunchKernel(CUfunction f, unsigned int, unsigned int, unsigned int,
                                unsigned int, unsigned int, unsigned int, unsigned int, CUstream,
                                void** params, void**) {
  return run_kernel("cuLaunchKernel", reinterpret_cast<fakecuda_kernel>(f), params);
}

extern "C" CUresult CUDAAPI cuLaunchKernel_ptsz(CUfunction f, unsigned int, unsigned int,
                                                unsigned int, unsigned int, unsigned int,
                                                unsigned int, unsigned int, CUstream, void** params,
                                                void**) {
  return run_kernel("cuLaunchKernel_ptsz", reinterpret_cast<fakecuda_kernel>(f), params);
}

CUresult CUDAAPI cuGraphLaunch(CUgraphExec exec, CUstream) {
  return run_graph("cuGraphLaunch", exec);
}

extern "C" CUresult CUDAAPI cuGraphLaunch_ptsz(CUgraphExec exec, CUstream) {
  return run_graph("cuGraphLaunch_ptsz", exec);
}

CUresult CUDAAPI cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode* mode) {
  FAKE_ENTER("cuThreadExchangeStreamCaptureMode");
  if (mode == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::swap(*mode, t_capture_mode);
  return CUDA_SUCCESS;
}

// Prints the emulated devices' memory as another process sees it ("DEVICE FREE TOTAL" lines):
// what nvidia-smi is to the real driver, for the emulated end-to-end tests.
#include <cuda.h>

#include <cstdio>

int main() {
  if (cuInit(0) != CUDA_SUCCESS) {
    std::fprintf(stderr, "fakecuda-smi: cuInit failed\n");
    return 1;
  }
  int count = 0;
  cuDeviceGetCount(&count);
  for (int d = 0; d < count; ++d) {
    CUcontext ctx = nullptr;
    cuDevicePrimaryCtxRetain(&ctx, d);
    cuCtxSetCurrent(ctx);
    size_t free_bytes = 0, total = 0;
    if (cuMemGetInfo(&free_bytes, &total) != CUDA_SUCCESS) return 1;
    std::printf("%d %zu %zu\n", d, free_bytes, total);
  }
  return 0;
}

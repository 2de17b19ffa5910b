// The exported dlsym. RTLD_NEXT lookups are answered relative to their caller, so for them the
// exported entry is a bare jump into glibc's dlsym that leaves the caller's return address in
// place; every other lookup goes to the body below. x86-64 only: elsewhere dlsym is not hooked and
// only programs that link the driver or the runtime dynamically are covered.
#include <dlfcn.h>

#include <cstring>

#include "driver/real_runtime.h"
#include "hooks/driver_symbols.h"

namespace gpusleep {
namespace {

// The load address of this library, to recognise its own lookups.
const void* this_library() {
  static const void* base = [] {
    Dl_info info{};
    return dladdr(reinterpret_cast<void*>(&this_library), &info) ? info.dli_fbase : nullptr;
  }();
  return base;
}

bool from_this_library(const void* caller) {
  Dl_info info{};
  return dladdr(caller, &info) != 0 && info.dli_fbase == this_library();
}

// Whether `fn` lies in a CUDA driver library (libcuda.so*), so that a lookup on some other
// library that happens to export a driver name is left alone.
bool in_driver_library(const void* fn) {
  Dl_info info{};
  if (dladdr(fn, &info) == 0 || info.dli_fname == nullptr) return false;
  const char* base = std::strrchr(info.dli_fname, '/');
  base = base != nullptr ? base + 1 : info.dli_fname;
  return std::strncmp(base, "libcuda.so", 10) == 0;
}

}  // namespace
}  // namespace gpusleep

#if defined(__x86_64__)

// Read by the exported entry; set before any other library's constructor can look anything up.
extern "C" {
__attribute__((visibility("hidden"))) void* gpusleep_next_dlsym = nullptr;
}

__attribute__((constructor(101))) static void gpusleep_init_dlsym() {
  gpusleep_next_dlsym = reinterpret_cast<void*>(gpusleep::real_dlsym_function());
}

// Entered by a jump from the exported dlsym, so its return address is the caller's.
extern "C" __attribute__((visibility("hidden"), noinline)) void* gpusleep_dlsym_body(
    void* handle, const char* name) {
  const void* caller = __builtin_return_address(0);
  void* sym = gpusleep::real_dlsym(handle, name);
  if (sym == nullptr || name == nullptr || name[0] != 'c' || name[1] != 'u') return sym;
  const int slot = gpusleep::driver_hooks::table().by_abi(name);
  if (slot < 0) return sym;
  if (gpusleep::from_this_library(caller) || !gpusleep::in_driver_library(sym)) return sym;
  return gpusleep::driver_hooks::for_slot(slot, sym);
}

// void* dlsym(void* handle, const char* name): RTLD_NEXT (-1) jumps straight into glibc once its
// address is known; everything else (and RTLD_NEXT before then) into the body.
asm(R"(
  .text
  .globl dlsym
  .type dlsym, @function
  .p2align 4
dlsym:
  .cfi_startproc
  cmpq $-1, %rdi
  jne 1f
  movq gpusleep_next_dlsym(%rip), %rax
  testq %rax, %rax
  je 1f
  jmp *%rax
1:
  jmp gpusleep_dlsym_body
  .cfi_endproc
  .size dlsym, .-dlsym
)");

#endif

// Describing call sites.
#include "core/site_context.h"

#include <cxxabi.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace gpusleep {

std::string describe_frame(const PyFrame& frame) {
  std::string out = frame.module.empty() ? "?" : frame.module;
  out += ":" + frame.qualname;
  if (!frame.file.empty()) out += " (" + frame.file + ":" + std::to_string(frame.line) + ")";
  return out;
}

std::string native_symbol(std::uintptr_t address) {
  Dl_info info{};
  // A return address points after the call: look up the byte before it.
  if (address == 0 || dladdr(reinterpret_cast<void*>(address - 1), &info) == 0 ||
      info.dli_sname == nullptr) {
    return "";
  }
  int status = 0;
  char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
  std::string out = status == 0 && demangled != nullptr ? demangled : info.dli_sname;
  std::free(demangled);
  return out;
}

std::string describe_native(std::uintptr_t address) {
  Dl_info info{};
  if (address == 0 || dladdr(reinterpret_cast<void*>(address - 1), &info) == 0 ||
      info.dli_fname == nullptr) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(address));
    return buf;
  }
  const char* base = std::strrchr(info.dli_fname, '/');
  base = base != nullptr ? base + 1 : info.dli_fname;
  char buf[64];
  std::snprintf(
      buf, sizeof buf, "+0x%llx",
      static_cast<unsigned long long>(address - reinterpret_cast<std::uintptr_t>(info.dli_fbase)));
  std::string out = std::string(base) + buf;
  std::string sym = native_symbol(address);
  if (!sym.empty()) out += " (" + sym.substr(0, 160) + ")";
  return out;
}

}  // namespace gpusleep

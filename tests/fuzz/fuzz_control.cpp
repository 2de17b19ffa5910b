// libFuzzer target: arbitrary bytes as control requests, one per line, through the protocol
// parser and the request handlers of a live engine over the emulated driver (regions allocated,
// so sleep, wake, retag and rules do real work). Every line must get exactly one reply that is a
// protocol reply; nothing may crash, hang or leak (AddressSanitizer, UndefinedBehaviorSanitizer).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_world.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > (64u << 10)) return 0;  // the server refuses longer lines before parsing
  fuzz::world();
  std::string_view input(reinterpret_cast<const char*>(data), size);
  while (!input.empty()) {
    std::size_t nl = input.find('\n');
    std::string_view line = input.substr(0, nl);
    input = nl == std::string_view::npos ? std::string_view() : input.substr(nl + 1);
    fuzz::handle_and_check(line);
  }
  return 0;
}

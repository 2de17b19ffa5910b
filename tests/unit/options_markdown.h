// docs/options.md rendered from the option table, so the page cannot drift from the code.
#pragma once

#include <string>

namespace gpusleep::test {

// The whole of docs/options.md: its prose and one table row per option, in table order.
std::string options_markdown();

}  // namespace gpusleep::test

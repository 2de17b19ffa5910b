// Renders the option table as docs/options.md.
#include "options_markdown.h"

#include "core/options.h"

namespace gpusleep::test {
namespace {

constexpr const char* kIntro = R"(# Options

<!-- Rendered from the option table (preload/core/options.cpp); regenerate, never edit by hand:
     build/tests/unit/unit_tests --print-options-markdown > docs/options.md -->

The library reads its options once, from the environment of the process it is loaded into, when
that process first calls an intercepted CUDA function. Every option is a `GPUSLEEP_*` variable.
A value that does not parse, and a `GPUSLEEP_*` name that is not an option, is reported with a
warning on stderr and ignored: the option keeps its default and the process runs on.

`gpusleep run` sets some of them from its flags: `--tag` sets `GPUSLEEP_DEFAULT_TAG`, `--policy`
sets `GPUSLEEP_POLICY`, `--log-level` sets `GPUSLEEP_LOG_LEVEL`.

| variable | default | meaning |
| --- | --- | --- |
)";

constexpr const char* kOutro = R"(
Sizes take a `K`, `M` or `G` suffix (powers of 1024). Booleans are `1`/`0`, `true`/`false`,
`yes`/`no` or `on`/`off`.

The CLI itself reads `GPUSLEEP_RUNTIME_DIR`; for `run` and `--print-library`,
`GPUSLEEP_LIBRARY` (the path of `libgpusleep.so`, which otherwise is looked for in `lib/` of the
`gpusleep` binary's directory and of its parent); and for `run --preset`, `GPUSLEEP_PRESET_DIR`
(looked in before the shipped presets).
)";

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  for (std::size_t at = text.find(from); at != std::string::npos;
       at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
}

}  // namespace

std::string options_markdown() {
  std::string out = kIntro;
  for (const OptionSpec& spec : option_table()) {
    std::string shown = spec.shown_default != nullptr ? spec.shown_default
                                                      : "`" + std::string(spec.default_value) + "`";
    std::string doc = spec.doc;
    replace_all(doc, "{min}", range_bound_text(spec.range, spec.range.min));
    replace_all(doc, "{max}", range_bound_text(spec.range, spec.range.max));
    out += "| `" + std::string(spec.name) + "` | " + shown + " | " + doc + " |\n";
  }
  return out + kOutro;
}

}  // namespace gpusleep::test

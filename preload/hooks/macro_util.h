// Helpers for the X-macro lists of hooked symbols.
#pragma once

#define GPUSLEEP_STRIP(...) __VA_ARGS__
// GPUSLEEP_PREPEND(x, (a, b)) is (x, a, b).
#define GPUSLEEP_PREPEND(first, args) GPUSLEEP_PREPEND_I(first, GPUSLEEP_STRIP args)
#define GPUSLEEP_PREPEND_I(first, ...) (first, __VA_ARGS__)
#define GPUSLEEP_EXPORT __attribute__((visibility("default")))

// One error type for the whole engine. Every message names the offending
// file / key / tensor / value so a user can fix the input without a debugger.
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace engine {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// fail("tensor '{}' in {}: bad shape", name, path) throws engine::Error.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// check(cond, "...") is fail() guarded by a condition; the message is only
// formatted when the check fails.
template <typename... Args>
void check(bool condition, fmt::format_string<Args...> format, Args&&... args) {
  if (!condition) fail(format, std::forward<Args>(args)...);
}

}  // namespace engine

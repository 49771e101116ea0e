// Errors of failed OS calls (open, rename, fsync, mkdir, flock, ...), each
// naming what failed, on which path, and the system's reason.
#pragma once
#include <cstring>
#include <string_view>

#include "engine/error.h"

namespace engine {

// Throws Error("<what> '<path>': <reason>"), e.g. "cannot open 'x.bin': No such
// file or directory". `error_number` is the failing call's errno, read right
// after it, before anything that may change errno (a close, a remove, a string
// built or formatted); or the error number that a call such as posix_spawn returns.
[[noreturn]] inline void fail_os_error(int error_number, std::string_view what, std::string_view path) {
  fail("{} '{}': {}", what, path, std::strerror(error_number));
}

// fail_os_error unless `error_number` is 0; for `const int error = call() == 0 ? 0 : errno;`.
inline void check_os_error(int error_number, std::string_view what, std::string_view path) {
  if (error_number != 0) fail_os_error(error_number, what, path);
}

}  // namespace engine

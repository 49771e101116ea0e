// Lowers a resource limit (open files, file size) for one scope, so that a
// system call fails with a known errno even as root.
#pragma once
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstring>

namespace engine::testing {

class ScopedLimit {
 public:
  ScopedLimit(int resource, rlim_t soft) : resource_(resource) {
    EXPECT_EQ(getrlimit(resource, &old_), 0) << std::strerror(errno);
    rlimit lowered = old_;
    lowered.rlim_cur = soft;
    EXPECT_EQ(setrlimit(resource, &lowered), 0) << std::strerror(errno);
  }
  ~ScopedLimit() { setrlimit(resource_, &old_); }
  ScopedLimit(const ScopedLimit&) = delete;
  ScopedLimit& operator=(const ScopedLimit&) = delete;

 private:
  int resource_;
  rlimit old_{};
};

}  // namespace engine::testing

// Locating ../shared (fixtures, models, data) from tests. Tests run from the
// repository root; ENGINE_SHARED_DIR overrides the location. Where the folder
// is absent, tests that need it are skipped locally but fail under CI.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

#include <unistd.h>

namespace engine::testing {

inline std::string shared_dir() {
  const char* env = std::getenv("ENGINE_SHARED_DIR");
  return env ? env : "../shared";
}

inline std::string shared_path(const std::string& relative) { return shared_dir() + "/" + relative; }

// The folder of this test process under the system's temp folder, named with
// the process id, so that test runs at the same time (CI jobs, other
// checkouts) never write into each other's files. tests/test_main.cpp removes
// it when the tests end.
inline std::filesystem::path scratch_root() {
  return std::filesystem::temp_directory_path() / ("engine_tests_" + std::to_string(::getpid()));
}

// A path in scratch_root() (not created).
inline std::string scratch_path(const std::string& name) { return (scratch_root() / name).string(); }

// Sets an environment variable (ENGINE_DATA_DIR, ENGINE_CACHE_DIR, ...) for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() { old_ ? setenv(name_, old_->c_str(), 1) : unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace engine::testing

// Use at the top of a test that reads ../shared/<relative>.
#define REQUIRE_SHARED(relative)                                                              \
  do {                                                                                        \
    if (!std::filesystem::exists(::engine::testing::shared_path(relative))) {                 \
      if (std::getenv("CI")) FAIL() << "missing " << ::engine::testing::shared_path(relative); \
      GTEST_SKIP() << "missing " << ::engine::testing::shared_path(relative);                \
    }                                                                                         \
  } while (0)

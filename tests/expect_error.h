// Asserts that an engine call fails with an engine::Error whose message
// mentions every given fragment (the offending index, size, shape ...).
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "engine/error.h"

namespace engine::testing {

template <typename Call>
void expect_error_mentioning(Call&& call, const std::vector<std::string>& fragments) {
  try {
    call();
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const std::string& fragment : fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos) << "'" << fragment << "' not in: " << message;
    }
    return;
  }
  ADD_FAILURE() << "expected an engine::Error";
}

// The message of the engine::Error that `call` throws. Throwing none is a
// test failure, and gives "", which no assertion on a fragment matches.
inline std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an engine::Error";
  return "";
}

}  // namespace engine::testing

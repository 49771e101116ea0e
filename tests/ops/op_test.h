// What the op tests in tests/ops share: the float64 gradient check and value
// comparison of tests/gradcheck.h and the error assertion of
// tests/expect_error.h, named in namespace engine so that a test calls them
// unqualified.
#pragma once
#include "tests/expect_error.h"
#include "tests/gradcheck.h"

namespace engine {

using testing::expect_close;
using testing::expect_error_mentioning;
using testing::expect_gradients_match;
using testing::random_leaf;

}  // namespace engine

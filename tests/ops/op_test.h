// What the op tests in tests/ops share: the float64 gradient checks and value
// comparisons of tests/gradcheck.h and the error assertion of
// tests/expect_error.h, named in namespace engine so that a test calls them
// unqualified, and the scan tests' order of time.
#pragma once
#include "tests/expect_error.h"
#include "tests/gradcheck.h"

namespace engine {

using testing::expect_close;
using testing::expect_error_mentioning;
using testing::expect_gradients_match;
using testing::expect_same_function;
using testing::gradients;
using testing::random_leaf;

// Time index of step k of a scan over `length` tokens: the scan tests' own,
// independent of the engine's SequenceOrder.
inline int64_t time_at(int64_t step, int64_t length, bool reverse) { return reverse ? length - 1 - step : step; }

}  // namespace engine

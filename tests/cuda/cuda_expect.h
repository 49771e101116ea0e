// Comparisons of a CUDA result with the CPU reference, shared by the Cuda*
// suites.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace engine {

// max |actual - expected| <= tolerance * max |expected|: relative at the
// tensor's scale (tolerance 0: identical values).
inline void expect_matches(const Tensor& actual, const Tensor& expected, double tolerance, const std::string& what) {
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  const std::vector<double> a = actual.to_doubles(), e = expected.to_doubles();
  double scale = 1e-12, worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(e[i]));
    worst = std::max(worst, std::abs(a[i] - e[i]));
  }
  EXPECT_LE(worst, tolerance * scale) << what << ": max abs error " << worst << " at scale " << scale;
}

// Per element: |actual - expected| <= tol * (1 + |expected| + 0.01 * max |expected|).
// The max term allows for sums of many terms (reduced parameter gradients,
// attention's dk and dv over all query rows), whose rounding scales with the
// largest terms rather than with the result. actual must be on the GPU.
inline void expect_all_close(const Tensor& actual, const Tensor& expected, double tol, const std::string& what) {
  ASSERT_TRUE(actual.defined()) << what << ": no value on cuda";
  ASSERT_TRUE(expected.defined()) << what << ": no value on cpu";
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  EXPECT_TRUE(actual.device().is_cuda()) << what << " is on " << actual.device().str();
  const std::vector<double> a = actual.to_doubles(), e = expected.to_doubles();
  double max_abs = 0;
  for (double v : e) max_abs = std::max(max_abs, std::abs(v));
  int64_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double allowed = tol * (1.0 + std::abs(e[i]) + 0.01 * max_abs);
    if (!(std::abs(a[i] - e[i]) <= allowed) && bad++ < 5) {
      ADD_FAILURE() << what << " element " << i << ": cuda " << a[i] << ", cpu " << e[i] << " (allowed " << allowed
                    << ")";
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << a.size() << " elements differ";
}

}  // namespace engine

// Numerical gradient checking for tests: autograd's gradient of
// L = sum(f(inputs) * W), with W a fixed random tensor, against central
// differences, all in float64.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops/elementwise/elementwise.h"
#include "engine/ops/reduce/reduce.h"
#include "engine/random.h"

namespace engine::testing {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// A float64 leaf with random values in [low, high] that requires grad.
inline Tensor random_leaf(const Shape& shape, Rng& rng, double low = -1.0, double high = 1.0) {
  Tensor t = Tensor::uniform(shape, rng, low, high, DType::F64);
  t.set_requires_grad(true);
  return t;
}

inline void expect_gradients_match(const Fn& f, const std::vector<Tensor>& inputs, double eps = 1e-6,
                                   double tolerance = 1e-6, uint64_t seed = 7) {
  Rng rng(seed);
  Tensor out = f(inputs);
  Tensor weights = Tensor::uniform(out.shape(), rng, 0.5, 1.5, DType::F64);
  auto loss_of = [&](const std::vector<Tensor>& xs) { return sum(mul(f(xs), weights)); };
  for (const Tensor& x : inputs) x.zero_grad();
  loss_of(inputs).backward();

  NoGradGuard no_grad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.requires_grad()) continue;
    ASSERT_TRUE(x.grad().defined()) << "no gradient reached input " << i;
    ASSERT_EQ(x.grad().shape(), x.shape());
    std::vector<double> analytic = x.grad().to_doubles();
    double* values = x.data<double>();
    for (int64_t j = 0; j < x.numel(); ++j) {
      const double saved = values[j];
      values[j] = saved + eps;
      const double plus = loss_of(inputs).item<double>();
      values[j] = saved - eps;
      const double minus = loss_of(inputs).item<double>();
      values[j] = saved;
      const double numeric = (plus - minus) / (2 * eps);
      EXPECT_NEAR(analytic[j], numeric, tolerance * (1.0 + std::abs(numeric)))
          << "input " << i << " element " << j;
    }
  }
}

// Asserts two tensors hold the same values within a tolerance.
inline void expect_close(const Tensor& actual, const Tensor& expected, double tolerance) {
  ASSERT_EQ(actual.shape(), expected.shape());
  std::vector<double> a = actual.to_doubles(), e = expected.to_doubles();
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_NEAR(a[i], e[i], tolerance * (1.0 + std::abs(e[i]))) << "element " << i;
  }
}

}  // namespace engine::testing

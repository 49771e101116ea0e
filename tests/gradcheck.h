// Numerical gradient checking for tests: autograd's gradient of
// L = sum(f(inputs) * W), with W a fixed random tensor, against central
// differences, all in float64; and a fused op against its composition from
// other ops, value and gradients.
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

// Gradients of sum(f(inputs) * weights) with respect to every input (an
// undefined input, e.g. an optional bias left out, gets an undefined one).
inline std::vector<Tensor> gradients(const Fn& f, const std::vector<Tensor>& inputs, const Tensor& weights) {
  for (const Tensor& t : inputs) {
    if (t.defined()) t.zero_grad();
  }
  sum(mul(f(inputs), weights)).backward();
  std::vector<Tensor> grads;
  for (const Tensor& t : inputs) grads.push_back(t.defined() ? t.grad() : Tensor());
  return grads;
}

inline void expect_gradients_match(const Fn& f, const std::vector<Tensor>& inputs, double eps = 1e-6,
                                   double tolerance = 1e-6, uint64_t seed = 7) {
  Rng rng(seed);
  Tensor out = f(inputs);
  Tensor weights = Tensor::uniform(out.shape(), rng, 0.5, 1.5, DType::F64);
  auto loss_of = [&](const std::vector<Tensor>& xs) { return sum(mul(f(xs), weights)); };
  const std::vector<Tensor> grads = gradients(f, inputs, weights);

  NoGradGuard no_grad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.requires_grad()) continue;
    ASSERT_TRUE(grads[i].defined()) << "no gradient reached input " << i;
    ASSERT_EQ(grads[i].shape(), x.shape());
    std::vector<double> analytic = grads[i].to_doubles();
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

// A fused op and its composition from other ops agree: the same value and
// the same gradient of every input (float64, to 1e-12).
inline void expect_same_function(const Fn& fused, const Fn& composed, const std::vector<Tensor>& inputs, Rng& rng) {
  const Tensor expected = composed(inputs);
  expect_close(fused(inputs), expected, 1e-12);
  const Tensor weights = Tensor::uniform(expected.shape(), rng, 0.5, 1.5, DType::F64);
  const std::vector<Tensor> expected_grads = gradients(composed, inputs, weights);
  const std::vector<Tensor> actual_grads = gradients(fused, inputs, weights);
  for (size_t i = 0; i < inputs.size(); ++i) expect_close(actual_grads[i], expected_grads[i], 1e-12);
}

}  // namespace engine::testing

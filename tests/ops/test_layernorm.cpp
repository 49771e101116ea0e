#include <cmath>

#include "engine/ops/norm/layernorm.h"
#include "engine/ops/view/view.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

// Layer norm composed from elementwise and reduce ops: an independent reference.
Tensor composite_layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  Tensor centered = x - mean(x, {-1}, true);
  Tensor var = mean(centered * centered, {-1}, true);
  return centered / sqrt(var + eps) * w + b;
}

TEST(LayerNorm, ForwardMatchesNaiveLoop) {
  const int rows = 2, cols = 4;
  const double eps = 1e-5;
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 10, -10, 5, 100}, {rows, cols});
  Tensor w = Tensor::from_vector<float>({1, 2, -1, 0.5}, {cols});
  Tensor b = Tensor::from_vector<float>({0, 1, 2, 3}, {cols});
  std::vector<float> y = layer_norm(x, w, b, eps).to_floats(), plain = layer_norm(x, {}, {}, eps).to_floats();
  std::vector<float> xs = x.to_floats(), ws = w.to_floats(), bs = b.to_floats();
  for (int r = 0; r < rows; ++r) {
    double m = 0, var = 0;
    for (int i = 0; i < cols; ++i) m += xs[r * cols + i] / cols;
    for (int i = 0; i < cols; ++i) var += (xs[r * cols + i] - m) * (xs[r * cols + i] - m) / cols;
    for (int i = 0; i < cols; ++i) {
      const double normed = (xs[r * cols + i] - m) / std::sqrt(var + eps);
      EXPECT_NEAR(plain[r * cols + i], normed, 1e-5);
      EXPECT_NEAR(y[r * cols + i], normed * ws[i] + bs[i], 1e-5);
    }
  }
}

// Rows whose variance is below eps, where a norm that drops or misplaces eps
// gives other values (the rows above hide it under the float tolerance): a
// constant row maps to the bias, a narrow one to (x - mean) /
// sqrt(var + eps).
TEST(LayerNorm, EpsRulesRowsOfSmallSpread) {
  const double eps = 1e-3;
  Tensor x = Tensor::from_vector<double>({0.7, 0.7, 0.7, 0.7, 0.00, 0.01, 0.02, 0.03}, {2, 4});
  Tensor w = Tensor::from_vector<double>({1.5, -1, 2, 0.5}, {4});
  Tensor b = Tensor::from_vector<double>({0.25, 1, -2, 3}, {4});
  const std::vector<double> y = layer_norm(x, w, b, eps).to_doubles();
  const double var = 1.25e-4;  // of {0, 0.01, 0.02, 0.03}, around 0.015
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(y[i], b.to_doubles()[i], 1e-12) << i;
    EXPECT_NEAR(y[4 + i], (0.01 * i - 0.015) / std::sqrt(var + eps) * w.to_doubles()[i] + b.to_doubles()[i], 1e-12) << i;
  }
}

TEST(LayerNorm, Gradients) {
  Rng rng(21);
  Tensor x = random_leaf({3, 5}, rng, -2.0, 2.0);
  Tensor w = random_leaf({5}, rng, 0.5, 1.5);
  Tensor b = random_leaf({5}, rng);
  auto affine = [](const auto& in) { return layer_norm(in[0], in[1], in[2], 1e-5); };
  expect_gradients_match(affine, {x, w, b});
  expect_gradients_match([](const auto& in) { return layer_norm(in[0], {}, {}, 1e-5); }, {x});
  expect_gradients_match([](const auto& in) { return layer_norm(in[0], in[1], {}, 1e-5); }, {x, w});
  Tensor x3 = random_leaf({2, 3, 5}, rng, -2.0, 2.0);
  expect_gradients_match(affine, {x3, w, b});
  // Non-contiguous input: normalise along a strided dimension.
  Tensor xt = random_leaf({5, 3}, rng, -2.0, 2.0);
  expect_gradients_match([](const auto& in) { return layer_norm(transpose(in[0], 0, 1), in[1], in[2], 1e-5); },
                         {xt, w, b});
}

// The residual stream's norm: x passed on next to layer_norm(x), the two
// gradients of x summed by the norm's backward. The same values as the
// composite that uses x twice, and gradients that match the numerical ones,
// with gradients reaching either output alone or both.
TEST(LayerNorm, PassingInputSumsBothGradients) {
  Rng rng(23);
  Tensor x = random_leaf({2, 3, 5}, rng, -2.0, 2.0), w = random_leaf({5}, rng, 0.5, 1.5), b = random_leaf({5}, rng);
  auto both = [](const auto& in) {
    const std::vector<Tensor> out = layer_norm_passing_input(in[0], in[1], in[2], 1e-5, DType::F64);
    return add(mul(out[0], 0.7), mul(out[1], out[1]));
  };
  auto composite = [](const auto& in) {
    return add(mul(in[0], 0.7), mul(layer_norm(in[0], in[1], in[2], 1e-5), layer_norm(in[0], in[1], in[2], 1e-5)));
  };
  expect_close(both(std::vector<Tensor>{x, w, b}).detach(), composite(std::vector<Tensor>{x, w, b}).detach(), 1e-12);
  expect_gradients_match(both, {x, w, b});
  expect_gradients_match(
      [](const auto& in) { return mul(layer_norm_passing_input(in[0], in[1], in[2], 1e-5, DType::F64)[1], 2.0); },
      {x, w, b});
  const Tensor w_const = w.detach(), b_const = b.detach();
  expect_gradients_match(
      [&](const auto& in) { return mul(layer_norm_passing_input(in[0], w_const, b_const, 1e-5, DType::F64)[0], 2.0); },
      {x});
  // The passed-on x is x's memory, not a copy.
  const std::vector<Tensor> out = layer_norm_passing_input(x, w, b, 1e-5, DType::F64);
  EXPECT_EQ(out[0].raw_data(), x.raw_data());
}

// Big enough that rows are split across threads and the per-thread partial
// sums of dweight / dbias get combined.
TEST(LayerNorm, ParallelPathMatchesCompositeOps) {
  Rng rng(22);
  Tensor x = random_leaf({80, 300}, rng, -3.0, 5.0);
  Tensor w = random_leaf({300}, rng, 0.5, 1.5);
  Tensor b = random_leaf({300}, rng);
  Tensor g = Tensor::randn({80, 300}, rng, DType::F64);
  layer_norm(x, w, b, 1e-5).backward(g);
  std::vector<Tensor> fused{x.grad(), w.grad(), b.grad()};
  for (const Tensor& t : {x, w, b}) t.zero_grad();
  Tensor expected = composite_layer_norm(x, w, b, 1e-5);
  expected.backward(g);
  expect_close(layer_norm(x, w, b, 1e-5).detach(), expected.detach(), 1e-10);
  expect_close(fused[0], x.grad(), 1e-9);
  expect_close(fused[1], w.grad(), 1e-9);
  expect_close(fused[2], b.grad(), 1e-9);
}

TEST(LayerNorm, Errors) {
  Tensor x = Tensor::ones({2, 4});
  EXPECT_THROW(layer_norm(x, Tensor::ones({3}), {}, 1e-5), Error);                 // wrong weight size
  EXPECT_THROW(layer_norm(x, {}, Tensor::ones({4}, DType::F64), 1e-5), Error);     // wrong bias dtype
  EXPECT_THROW(layer_norm(Tensor::full({}, 1.0), {}, {}, 1e-5), Error);            // scalar
  EXPECT_THROW(layer_norm(x, {}, {}, -1.0), Error);                                // negative eps
}

}  // namespace
}  // namespace engine

// The fused linear ops on the CPU: linear and linear_gelu against the
// composite of the ops they replace, and their float64 gradients.
#include <gtest/gtest.h>

#include "engine/ops/ops.h"
#include "layers/mlp.h"
#include "tests/gradcheck.h"

namespace engine {
namespace {

using testing::expect_close;
using testing::expect_gradients_match;
using testing::random_leaf;

// The gradients of sum(f(inputs) * weights) with respect to each input.
std::vector<Tensor> gradients_of(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                 const std::vector<Tensor>& inputs, uint64_t seed = 3) {
  std::vector<Tensor> leaves;
  for (const Tensor& x : inputs) {
    Tensor leaf = x.detach().clone();
    leaf.set_requires_grad(true);
    leaves.push_back(leaf);
  }
  Tensor out = f(leaves);
  Rng rng(seed);
  sum(mul(out, Tensor::uniform(out.shape(), rng, 0.5, 1.5, out.dtype()))).backward();
  std::vector<Tensor> grads;
  for (const Tensor& leaf : leaves) grads.push_back(leaf.grad());
  return grads;
}

Tensor composite_linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  Tensor y = matmul(x, transpose(w, 0, 1));
  return b.defined() ? add(y, b) : y;
}

TEST(Linear, ForwardIsBitIdenticalToTheComposite) {
  Rng rng(11);
  for (const Shape& x_shape : {Shape{2, 65, 192}, Shape{3, 17, 40}, Shape{7, 40}}) {
    const int64_t in = x_shape.back(), out = in == 192 ? 576 : 24;
    Tensor x = Tensor::uniform(x_shape, rng, -1, 1), w = Tensor::uniform({out, in}, rng, -0.3, 0.3);
    Tensor b = Tensor::uniform({out}, rng, -1, 1);
    // Same BLAS call, same float additions, same exact GELU: the same bits.
    EXPECT_EQ(linear(x, w, b).to_floats(), composite_linear(x, w, b).to_floats());
    EXPECT_EQ(linear(x, w).to_floats(), composite_linear(x, w, Tensor()).to_floats());
    EXPECT_EQ(linear_gelu(x, w, b).to_floats(), gelu(composite_linear(x, w, b)).to_floats());
    EXPECT_EQ(linear_gelu(x, w).to_floats(), gelu(composite_linear(x, w, Tensor())).to_floats());
  }
}

TEST(Linear, GradientsMatchTheCompositeInFloat32) {
  Rng rng(12);
  Tensor x = Tensor::uniform({3, 17, 40}, rng, -1, 1), w = Tensor::uniform({24, 40}, rng, -0.5, 0.5);
  Tensor b = Tensor::uniform({24}, rng, -1, 1);
  auto fused = [](const auto& in) { return linear_gelu(in[0], in[1], in[2]); };
  auto unfused = [](const auto& in) { return gelu(composite_linear(in[0], in[1], in[2])); };
  std::vector<Tensor> expected = gradients_of(unfused, {x, w, b}), actual = gradients_of(fused, {x, w, b});
  for (size_t i = 0; i < 3; ++i) expect_close(actual[i], expected[i], 1e-5);
  expected = gradients_of([](const auto& in) { return composite_linear(in[0], in[1], in[2]); }, {x, w, b});
  actual = gradients_of([](const auto& in) { return linear(in[0], in[1], in[2]); }, {x, w, b});
  for (size_t i = 0; i < 3; ++i) expect_close(actual[i], expected[i], 1e-5);
}

TEST(Linear, GradcheckFloat64) {
  Rng rng(13);
  Tensor x = random_leaf({2, 3, 5}, rng), w = random_leaf({4, 5}, rng), b = random_leaf({4}, rng);
  expect_gradients_match([](const auto& in) { return linear(in[0], in[1], in[2]); }, {x, w, b});
  expect_gradients_match([](const auto& in) { return linear(in[0], in[1]); }, {x, w});
  // Pre-activations over [-3, 3], where GELU bends.
  Tensor x2 = random_leaf({2, 3, 5}, rng, -2, 2), b2 = random_leaf({4}, rng, -1, 1);
  expect_gradients_match([](const auto& in) { return linear_gelu(in[0], in[1], in[2]); }, {x2, w, b2});
  expect_gradients_match([](const auto& in) { return linear_gelu(in[0], in[1]); }, {x2, w});
  // A 2-D input, and a transposed (non-contiguous) one.
  Tensor x3 = random_leaf({5, 6}, rng);
  expect_gradients_match([](const auto& in) { return linear_gelu(transpose(in[0], 0, 1), in[1], in[2]); },
                         {x3, w, b2});
}

TEST(Linear, GradientsOnlyWhereAsked) {
  Rng rng(14);
  Tensor x = Tensor::uniform({4, 5}, rng, -1, 1, DType::F64), w = random_leaf({3, 5}, rng);
  Tensor b = Tensor::uniform({3}, rng, -1, 1, DType::F64);  // frozen input and bias
  sum(linear_gelu(x, w, b)).backward();
  EXPECT_TRUE(w.grad().defined());
  EXPECT_FALSE(x.grad().defined());
  EXPECT_FALSE(b.grad().defined());
  Tensor x2 = random_leaf({4, 5}, rng), w2 = Tensor::uniform({3, 5}, rng, -1, 1, DType::F64);
  sum(linear(x2, w2, b)).backward();
  EXPECT_TRUE(x2.grad().defined());
  EXPECT_FALSE(w2.grad().defined());
  // No recording under no-grad.
  NoGradGuard no_grad;
  EXPECT_FALSE(linear_gelu(x2, w, b).requires_grad());
}

TEST(Linear, EmptySizes) {
  Rng rng(15);
  Tensor w = random_leaf({3, 0}, rng), b = random_leaf({3}, rng), x = random_leaf({4, 0}, rng);
  Tensor y = linear_gelu(x, w, b);  // an empty inner dimension: gelu(bias) on every row
  ASSERT_EQ(y.shape(), (Shape{4, 3}));
  expect_close(select(y, 0, 2), gelu(b.detach()), 1e-12);
  sum(y).backward();
  ASSERT_TRUE(b.grad().defined());
  EXPECT_EQ(b.grad().shape(), (Shape{3}));
  EXPECT_EQ(w.grad().shape(), (Shape{3, 0}));
  Tensor none = linear(Tensor::zeros({0, 5}, DType::F64), Tensor::zeros({3, 5}, DType::F64));
  EXPECT_EQ(none.shape(), (Shape{0, 3}));
}

TEST(Linear, BadArgumentsFailClearly) {
  Tensor x = Tensor::zeros({2, 5}), w = Tensor::zeros({3, 5});
  EXPECT_THROW(linear(x, Tensor::zeros({3, 4})), Error);
  EXPECT_THROW(linear(x, w, Tensor::zeros({4})), Error);
  EXPECT_THROW(linear_gelu(x, Tensor::zeros({5})), Error);
  EXPECT_THROW(linear_gelu(x, w.to(DType::F64)), Error);
}

TEST(Linear, MlpUsesTheFusedOpWithTheSameResult) {
  Rng rng(16);
  Mlp mlp(8, 32, rng);
  Rng values(17);
  mlp.fc1.bias = Tensor::uniform({32}, values, -1, 1);
  Tensor x = Tensor::uniform({2, 5, 8}, values, -2, 2);
  EXPECT_EQ(mlp.forward(x).to_floats(), mlp.fc2.forward(gelu(mlp.fc1.forward(x))).to_floats());
}

}  // namespace
}  // namespace engine

// The fused linear ops on the CPU: linear, linear_gelu and fused_mlp against
// the composite of the ops they replace, and their float64 gradients.
#include <gtest/gtest.h>

#include <utility>

#include "engine/ops/matmul/matmul_kernels.h"
#include "engine/ops/ops.h"
#include "layers/mlp.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

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
    const Tensor residual = Tensor::uniform(linear(x, w).shape(), rng, -1, 1);
    EXPECT_EQ(linear(x, w, b, residual).to_floats(), add(composite_linear(x, w, b), residual).to_floats());
    EXPECT_EQ(linear(x, w, Tensor(), residual).to_floats(),
              add(composite_linear(x, w, Tensor()), residual).to_floats());
  }
}

TEST(Linear, ResidualMustMatchTheOutput) {
  Rng rng(18);
  const Tensor x = Tensor::uniform({2, 3, 5}, rng, -1, 1), w = Tensor::uniform({4, 5}, rng, -1, 1);
  testing::expect_error_mentioning([&] { linear(x, w, Tensor(), Tensor::zeros({2, 3, 5})); },
                                   {"linear: residual", "[2, 3, 4]"});
  testing::expect_error_mentioning([&] { linear(x, w, Tensor(), Tensor::zeros({2, 3, 4}, DType::F64)); },
                                   {"linear: residual"});
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

// More outputs than the CPU kernel's bias-gradient blocks of 64 columns: the
// second, partial block sums its own columns (the tests above have at most 24
// outputs, and the fused MLP's 96 are checked only against the same kernel).
TEST(Linear, BiasGradientPastOneColumnBlock) {
  Rng rng(13);
  Tensor x = Tensor::uniform({9, 7}, rng, -1, 1, DType::F64), w = Tensor::uniform({100, 7}, rng, -0.5, 0.5, DType::F64);
  Tensor b = Tensor::uniform({100}, rng, -1, 1, DType::F64);
  std::vector<Tensor> expected = gradients_of([](const auto& in) { return composite_linear(in[0], in[1], in[2]); },
                                              {x, w, b});
  std::vector<Tensor> actual = gradients_of([](const auto& in) { return linear(in[0], in[1], in[2]); }, {x, w, b});
  for (size_t i = 0; i < 3; ++i) expect_close(actual[i], expected[i], 1e-12);
  expected = gradients_of([](const auto& in) { return gelu(composite_linear(in[0], in[1], in[2])); }, {x, w, b});
  actual = gradients_of([](const auto& in) { return linear_gelu(in[0], in[1], in[2]); }, {x, w, b});
  for (size_t i = 0; i < 3; ++i) expect_close(actual[i], expected[i], 1e-12);
}

TEST(Linear, GradcheckFloat64) {
  Rng rng(13);
  Tensor x = random_leaf({2, 3, 5}, rng), w = random_leaf({4, 5}, rng), b = random_leaf({4}, rng);
  expect_gradients_match([](const auto& in) { return linear(in[0], in[1], in[2]); }, {x, w, b});
  expect_gradients_match([](const auto& in) { return linear(in[0], in[1]); }, {x, w});
  Tensor residual = random_leaf({2, 3, 4}, rng);
  expect_gradients_match([](const auto& in) { return linear(in[0], in[1], in[2], in[3]); }, {x, w, b, residual});
  // Pre-activations over [-3, 3], where GELU bends.
  Tensor x2 = random_leaf({2, 3, 5}, rng, -2, 2), b2 = random_leaf({4}, rng, -1, 1);
  expect_gradients_match([](const auto& in) { return linear_gelu(in[0], in[1], in[2]); }, {x2, w, b2});
  expect_gradients_match([](const auto& in) { return linear_gelu(in[0], in[1]); }, {x2, w});
  // A 2-D input, and a transposed (non-contiguous) one.
  Tensor x3 = random_leaf({5, 6}, rng);
  expect_gradients_match([](const auto& in) { return linear_gelu(transpose(in[0], 0, 1), in[1], in[2]); },
                         {x3, w, b2});
}

// fused_mlp runs the same kernels as linear(linear_gelu(...)): the same bits,
// forward and backward, whichever inputs want gradients.
TEST(Linear, FusedMlpIsBitIdenticalToTheTwoOps) {
  Rng rng(16);
  Tensor x = Tensor::uniform({3, 17, 40}, rng, -1, 1), w1 = Tensor::uniform({96, 40}, rng, -0.5, 0.5);
  Tensor b1 = Tensor::uniform({96}, rng, -1, 1), w2 = Tensor::uniform({24, 96}, rng, -0.3, 0.3);
  Tensor b2 = Tensor::uniform({24}, rng, -1, 1);
  auto fused = [](const auto& in) { return fused_mlp(in[0], in[1], in[2], in[3], in[4]); };
  auto two_ops = [](const auto& in) { return linear(linear_gelu(in[0], in[1], in[2]), in[3], in[4]); };
  EXPECT_EQ(fused(std::vector<Tensor>{x, w1, b1, w2, b2}).to_floats(),
            two_ops(std::vector<Tensor>{x, w1, b1, w2, b2}).to_floats());
  const std::vector<Tensor> expected = gradients_of(two_ops, {x, w1, b1, w2, b2});
  const std::vector<Tensor> actual = gradients_of(fused, {x, w1, b1, w2, b2});
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(actual[i].to_floats(), expected[i].to_floats()) << i;
  // Only fc2 trainable (the backward then skips fc1's part): the same fc2
  // gradients as the two ops give, and none for fc1 or x.
  auto fc2_gradients = [&](bool fused_op) {
    Tensor w1_const = w1.clone(), w2_leaf = w2.clone().set_requires_grad(true);
    Tensor b2_leaf = b2.clone().set_requires_grad(true);
    Rng weights_rng(5);
    Tensor out = fused_op ? fused_mlp(x, w1_const, b1, w2_leaf, b2_leaf)
                          : linear(linear_gelu(x, w1_const, b1), w2_leaf, b2_leaf);
    sum(mul(out, Tensor::uniform(out.shape(), weights_rng, 0.5, 1.5))).backward();
    EXPECT_FALSE(w1_const.grad().defined());
    return std::vector<Tensor>{w2_leaf.grad(), b2_leaf.grad()};
  };
  const std::vector<Tensor> fc2_only = fc2_gradients(true), fc2_expected = fc2_gradients(false);
  for (size_t i = 0; i < 2; ++i) {
    ASSERT_TRUE(fc2_only[i].defined()) << i;
    EXPECT_EQ(fc2_only[i].to_floats(), fc2_expected[i].to_floats()) << "fc2 only, gradient " << i;
  }
  EXPECT_FALSE(x.grad().defined());
}

TEST(Linear, FusedMlpGradcheckFloat64) {
  Rng rng(17);
  Tensor x = random_leaf({2, 3, 5}, rng, -2, 2), w1 = random_leaf({7, 5}, rng), b1 = random_leaf({7}, rng, -1, 1);
  Tensor w2 = random_leaf({4, 7}, rng), b2 = random_leaf({4}, rng);
  expect_gradients_match([](const auto& in) { return fused_mlp(in[0], in[1], in[2], in[3], in[4]); },
                         {x, w1, b1, w2, b2});
  expect_gradients_match([](const auto& in) { return fused_mlp(in[0], in[1], Tensor(), in[2], Tensor()); },
                         {x, w1, w2});
  Tensor residual = random_leaf({2, 3, 4}, rng);
  expect_gradients_match([](const auto& in) { return fused_mlp(in[0], in[1], in[2], in[3], in[4], in[5]); },
                         {x, w1, b1, w2, b2, residual});
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

// The CPU kernels with the CUDA kernels' bf16-mode contract: the forward
// computes with its operands rounded to bfloat16 (held in their own dtype
// here) and returns those copies for the backward, which counts the calls
// that got an x. Installed for the object's lifetime.
class RoundingLinearKernels {
 public:
  RoundingLinearKernels() {
    real_forward_ = std::exchange(linear_forward_kernel.cpu, &rounding_forward);
    real_backward_ = std::exchange(linear_backward_kernel.cpu, &counting_backward);
  }
  ~RoundingLinearKernels() {
    linear_forward_kernel.cpu = real_forward_;
    linear_backward_kernel.cpu = real_backward_;
  }
  RoundingLinearKernels(const RoundingLinearKernels&) = delete;
  RoundingLinearKernels& operator=(const RoundingLinearKernels&) = delete;

  static Tensor rounded(const Tensor& t) { return t.to(DType::BF16).to(t.dtype()); }
  static int backward_calls_with_x() { return backward_calls_with_x_; }

 private:
  static LinearOperands rounding_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                         const Tensor& residual, const Tensor& out) {
    return real_forward_(rounded(x), rounded(weight), bias, residual, out);
  }
  static void counting_backward(const LinearOperands& saved, const Tensor& pre, const Tensor& dy, const Tensor& dx,
                                const Tensor& dweight, const Tensor& dbias) {
    if (saved.x.defined()) ++backward_calls_with_x_;
    real_backward_(saved, pre, dy, dx, dweight, dbias);
  }
  static inline LinearForwardKernel real_forward_ = nullptr;
  static inline LinearBackwardKernel real_backward_ = nullptr;
  static inline int backward_calls_with_x_ = 0;
};

// The backward reads the operands that the forward kernel returned (the CUDA
// bf16 mode's rounded copies), not x and the weight again: the gradients are
// bit for bit those of the op on the rounded operands, and not those of the
// op on the originals.
TEST(Linear, TheBackwardReadsTheForwardKernelsOperands) {
  Rng rng(18);
  Tensor x = Tensor::uniform({3, 17, 40}, rng, -1, 1), w = Tensor::uniform({24, 40}, rng, -0.5, 0.5);
  Tensor b = Tensor::uniform({24}, rng, -1, 1);
  const Tensor xr = RoundingLinearKernels::rounded(x), wr = RoundingLinearKernels::rounded(w);
  for (bool with_gelu : {false, true}) {
    auto f = [with_gelu](const auto& in) {
      return with_gelu ? linear_gelu(in[0], in[1], in[2]) : linear(in[0], in[1], in[2]);
    };
    const std::vector<Tensor> on_rounded = gradients_of(f, {xr, wr, b}), on_originals = gradients_of(f, {x, w, b});
    const RoundingLinearKernels rounding;
    const std::vector<Tensor> actual = gradients_of(f, {x, w, b});
    const char* what = with_gelu ? "linear_gelu" : "linear";
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(actual[i].to_floats(), on_rounded[i].to_floats()) << what << " " << i;
    // dx and dW really depend on the rounding (the test could fail).
    for (size_t i = 0; i < 2; ++i) EXPECT_NE(actual[i].to_floats(), on_originals[i].to_floats()) << what << " " << i;
  }
}

// x is kept for the backward only when the weight needs a gradient.
TEST(Linear, KeepsXOnlyForTheWeightGradient) {
  Rng rng(19);
  Tensor x = Tensor::uniform({4, 5}, rng, -1, 1), w = Tensor::uniform({3, 5}, rng, -1, 1);
  x.set_requires_grad(true);
  const RoundingLinearKernels counting;
  const int before = RoundingLinearKernels::backward_calls_with_x();
  sum(linear(x, w)).backward();  // a frozen weight
  EXPECT_EQ(RoundingLinearKernels::backward_calls_with_x(), before);
  w.set_requires_grad(true);
  sum(linear_gelu(x, w)).backward();
  EXPECT_EQ(RoundingLinearKernels::backward_calls_with_x(), before + 1);
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
  // With a residual: bias + residual, and the residual's gradient passed through.
  Tensor residual = random_leaf({4, 3}, rng);
  expect_close(linear(x.detach(), w.detach(), b.detach(), residual.detach()), residual.detach() + b.detach(), 1e-12);
  expect_gradients_match([](const auto& in) { return linear(in[0], in[1], in[2], in[3]); }, {x, w, b, residual});
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
  // Random biases: at init both are zero, and a bias left out would go unseen.
  mlp.fc1.bias = Tensor::uniform({32}, values, -1, 1);
  mlp.fc2.bias = Tensor::uniform({8}, values, -1, 1);
  Tensor x = Tensor::uniform({2, 5, 8}, values, -2, 2);
  EXPECT_EQ(mlp.forward(x).to_floats(), mlp.fc2.forward(gelu(mlp.fc1.forward(x))).to_floats());
}

}  // namespace
}  // namespace engine

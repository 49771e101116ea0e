#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "engine/ops/elementwise/elementwise.h"
#include "engine/ops/view/view.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

TEST(Elementwise, ForwardMatchesScalarMath) {
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector<float>({10, 20, 30}, {3});
  EXPECT_EQ((a + b).to_floats(), (std::vector<float>{11, 22, 33, 14, 25, 36}));
  EXPECT_EQ((a - b).to_floats(), (std::vector<float>{-9, -18, -27, -6, -15, -24}));
  EXPECT_EQ((a * 2.0).to_floats(), (std::vector<float>{2, 4, 6, 8, 10, 12}));
  std::vector<float> g = gelu(a).to_floats();
  EXPECT_NEAR(g[0], 0.5 * 1 * (1 + std::erf(1 / std::sqrt(2.0))), 1e-6);
  EXPECT_NEAR(softplus(Tensor::full({1}, 50.0)).item<double>(), 50.0, 1e-6);  // no overflow
  Tensor signs = Tensor::from_vector<float>({-2.5f, -0.5f, 0.0f, 0.75f, 3.0f}, {5});
  EXPECT_EQ(relu(signs).to_floats(), (std::vector<float>{0, 0, 0, 0.75f, 3}));
  EXPECT_EQ(abs(signs).to_floats(), (std::vector<float>{2.5f, 0.5f, 0, 0.75f, 3}));
}

// The float32 functions against the same formulas in double, on a tensor
// large enough for the CPU's threads and vector lanes (libmvec, see
// engine/ops/vector_math.h) and of an odd size, so that loop remainders run
// too: within 8 float32 ulps of the value, plus, for gelu and silu, whose
// float32 formula cancels (1 + erf(x) for x << 0), a rounding of the input's
// size; infinite where the value is beyond float32's range, and possibly 0
// where it is below the smallest normal float (sigmoid(-100) = 1 / (1 + inf)).
TEST(Elementwise, Float32FunctionsMatchDoubleToAFewUlps) {
  Rng rng(12);
  std::vector<float> inputs(40'003);
  for (float& v : inputs) v = static_cast<float>(rng.uniform(-15.0, 15.0));
  inputs[0] = -100.0f;  // far tails
  inputs[1] = 100.0f;
  const Tensor x = Tensor::from_vector(inputs, {static_cast<int64_t>(inputs.size())});
  const double inv_sqrt2 = 1.0 / std::sqrt(2.0);
  auto sigmoid_of = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  struct Case {
    const char* name;
    Tensor (*op)(const Tensor&);
    std::function<double(double)> want;
    bool cancels;
  };
  const std::vector<Case> cases = {
      {"exp", exp, [](double v) { return std::exp(v); }, false},
      {"tanh", tanh, [](double v) { return std::tanh(v); }, false},
      {"sigmoid", sigmoid, sigmoid_of, false},
      {"gelu", gelu, [&](double v) { return 0.5 * v * (1.0 + std::erf(v * inv_sqrt2)); }, true},
      {"silu", silu, [&](double v) { return v * sigmoid_of(v); }, true},
      {"softplus", softplus, [](double v) { return std::max(v, 0.0) + std::log1p(std::exp(-std::abs(v))); }, false},
  };
  for (const Case& c : cases) {
    const std::vector<float> got = c.op(x).to_floats();
    int bad = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const double want = c.want(inputs[i]);
      bool ok;
      if (std::abs(want) > std::numeric_limits<float>::max()) {
        ok = std::isinf(got[i]);
      } else {
        const double ulp = std::ldexp(1.0, std::max(std::ilogb(want == 0 ? 1e-38 : want), -126) - 23);
        const double tolerance = 8 * ulp + (c.cancels ? std::ldexp(std::abs(inputs[i]), -22) : 0.0) +
                                 std::numeric_limits<float>::min();  // (subnormal values may come out as 0)
        ok = std::abs(got[i] - want) <= tolerance;
      }
      if (!ok && bad++ < 3) ADD_FAILURE() << c.name << "(" << inputs[i] << ") = " << got[i] << ", want " << want;
    }
    EXPECT_EQ(bad, 0) << c.name;
  }
}

TEST(Elementwise, GreaterEqualIsAStepWithoutGradient) {
  Tensor x = Tensor::from_vector<double>({-1.5, 0.99, 1.0, 2.5}, {2, 2});
  x.set_requires_grad(true);
  Tensor step = greater_equal(x, 1.0);
  EXPECT_EQ(step.to_doubles(), (std::vector<double>{0, 0, 1, 1}));
  EXPECT_EQ(step.dtype(), DType::F64);
  EXPECT_FALSE(step.requires_grad());
}

TEST(Elementwise, BroadcastShapes) {
  EXPECT_EQ(broadcast_shapes({2, 1, 4}, {3, 1}), (Shape{2, 3, 4}));
  EXPECT_THROW(broadcast_shapes({2, 3}, {4}), Error);
}

struct BinaryCase {
  Shape a, b;
};

class BinaryGrad : public ::testing::TestWithParam<BinaryCase> {};

TEST_P(BinaryGrad, AddSubMulDiv) {
  Rng rng(1);
  Tensor a = random_leaf(GetParam().a, rng);
  Tensor b = random_leaf(GetParam().b, rng, 0.5, 2.0);  // away from zero for div
  expect_gradients_match([](const auto& x) { return x[0] + x[1]; }, {a, b});
  expect_gradients_match([](const auto& x) { return x[0] - x[1]; }, {a, b});
  expect_gradients_match([](const auto& x) { return x[0] * x[1]; }, {a, b});
  expect_gradients_match([](const auto& x) { return x[0] / x[1]; }, {a, b});
}

INSTANTIATE_TEST_SUITE_P(Shapes, BinaryGrad,
                         ::testing::Values(BinaryCase{{3, 4}, {3, 4}}, BinaryCase{{2, 3, 4}, {4}},
                                           BinaryCase{{2, 1, 4}, {3, 1}}, BinaryCase{{1}, {2, 3}}));

TEST(Elementwise, UnaryGradients) {
  Rng rng(2);
  Tensor x = random_leaf({3, 5}, rng, -2.0, 2.0);
  Tensor positive = random_leaf({3, 5}, rng, 0.5, 2.0);
  for (auto f : {neg, exp, tanh, sigmoid, gelu, silu, softplus}) {
    expect_gradients_match([f](const auto& in) { return f(in[0]); }, {x});
  }
  for (auto f : {log, sqrt, reciprocal}) {
    expect_gradients_match([f](const auto& in) { return f(in[0]); }, {positive});
  }
  // abs and relu on both signs: on positive inputs alone they are the identity,
  // and their negative branch would go unchecked. (x keeps away from the kink:
  // its values are far more than the difference step from 0.)
  for (double v : x.to_doubles()) ASSERT_GT(std::abs(v), 1e-3);
  for (auto f : {abs, relu}) {
    expect_gradients_match([f](const auto& in) { return f(in[0]); }, {x});
  }
  expect_gradients_match([](const auto& in) { return pow(in[0], 2.5); }, {positive});
  expect_gradients_match([](const auto& in) { return pow(in[0], 2.0); }, {x});  // the square's own path
  expect_gradients_match([](const auto& in) { return pow(in[0], 3.0); }, {x});  // its backward squares
  expect_gradients_match([](const auto& in) { return in[0] * 3.0 + 1.5; }, {x});
  expect_gradients_match([](const auto& in) { return 2.0 / in[0]; }, {positive});
}

// At their kinks relu and abs take PyTorch's subgradients, relu'(0) = 0 and
// abs'(0) = sign(0) = 0 (the gradient checks above keep away from 0).
TEST(Elementwise, ReluAndAbsGradientsAtZeroAreZero) {
  for (DType dtype : {DType::F32, DType::F64}) {
    for (auto f : {relu, abs}) {
      Tensor x = Tensor::from_vector<double>({-1.5, 0.0, 2.0}, {3}).to(dtype);
      x.set_requires_grad(true);
      f(x).backward(Tensor::from_vector<double>({1, 2, 3}, {3}).to(dtype));
      const double at_negative = f == relu ? 0.0 : -1.0;
      EXPECT_EQ(x.grad().to_doubles(), (std::vector<double>{at_negative, 0, 3})) << dtype_name(dtype);
    }
  }
}

TEST(Elementwise, GradientThroughNonContiguousView) {
  Rng rng(3);
  Tensor a = random_leaf({4, 3}, rng);
  Tensor b = random_leaf({3, 4}, rng);
  expect_gradients_match([](const auto& x) { return gelu(transpose(x[0], 0, 1)) * x[1]; }, {a, b});
}

TEST(Elementwise, ReusedInputAccumulatesGradient) {
  Rng rng(4);
  Tensor x = random_leaf({5}, rng);
  expect_gradients_match([](const auto& in) { return in[0] * in[0] + exp(in[0]); }, {x});
}

TEST(Elementwise, MismatchedDtypesAreAnError) {
  Tensor a = Tensor::ones({2}, DType::F32);
  Tensor b = Tensor::ones({2}, DType::F64);
  EXPECT_THROW(a + b, Error);
}

TEST(SiluGatedSum, ForwardMatchesComposedOps) {
  Rng rng(5);
  Tensor a = Tensor::uniform({3, 4, 5}, rng, -2.0, 2.0), b = Tensor::uniform({3, 4, 5}, rng, -2.0, 2.0);
  Tensor z = Tensor::uniform({3, 4, 5}, rng, -4.0, 4.0);
  expect_close(silu_gated_sum(a, b, z), (a + b) * silu(z), 1e-6);
  expect_close(silu_gated_sum(a, Tensor(), z), a * silu(z), 1e-6);
  // Non-contiguous views are read through their layout.
  Tensor zt = transpose(Tensor::uniform({3, 5, 4}, rng, -4.0, 4.0), 1, 2);
  expect_close(silu_gated_sum(a, b, zt), (a + b) * silu(zt), 1e-6);
}

TEST(SiluGatedSum, GradientsMatchNumerical) {
  Rng rng(6);
  Tensor a = random_leaf({2, 3, 4}, rng, -2.0, 2.0), b = random_leaf({2, 3, 4}, rng, -2.0, 2.0);
  Tensor z = random_leaf({2, 3, 4}, rng, -4.0, 4.0);
  expect_gradients_match([](const auto& x) { return silu_gated_sum(x[0], x[1], x[2]); }, {a, b, z});
  expect_gradients_match([](const auto& x) { return silu_gated_sum(x[0], Tensor(), x[1]); }, {a, z});
  // The same tensor as a and b: its two gradients add up.
  expect_gradients_match([](const auto& x) { return silu_gated_sum(x[0], x[0], x[1]); }, {a, z});
  // Through non-contiguous views.
  Tensor at = random_leaf({4, 3}, rng, -2.0, 2.0), zt = random_leaf({4, 3}, rng, -4.0, 4.0);
  expect_gradients_match(
      [](const auto& x) { return silu_gated_sum(transpose(x[0], 0, 1), x[1], transpose(x[2], 0, 1)); },
      {at, random_leaf({3, 4}, rng), zt});
}

TEST(SiluGatedSum, GradientsOnlyForInputsThatRequireThem) {
  Rng rng(7);
  Tensor a = random_leaf({6}, rng), b = Tensor::uniform({6}, rng, -1.0, 1.0, DType::F64);
  Tensor z = Tensor::uniform({6}, rng, -3.0, 3.0, DType::F64);
  silu_gated_sum(a, b, z).backward(Tensor::ones({6}, DType::F64));
  expect_close(a.grad(), silu(z), 1e-12);
  EXPECT_FALSE(b.grad().defined());
  EXPECT_FALSE(z.grad().defined());

  Tensor z_leaf = random_leaf({6}, rng, -3.0, 3.0), a_const = a.detach();
  silu_gated_sum(a_const, b, z_leaf).backward(Tensor::ones({6}, DType::F64));
  EXPECT_FALSE(a_const.grad().defined());
  expect_close(z_leaf.grad(), (a_const + b) * sigmoid(z_leaf) * (1.0 + z_leaf * (1.0 - sigmoid(z_leaf))), 1e-12);

  // b alone: the sum's gradient is still computed, for b.
  Tensor b_leaf = random_leaf({6}, rng);
  silu_gated_sum(a_const, b_leaf, z).backward(Tensor::ones({6}, DType::F64));
  ASSERT_TRUE(b_leaf.grad().defined());
  expect_close(b_leaf.grad(), silu(z), 1e-12);
}

TEST(SiluGatedSum, MismatchedInputsAreNamedInTheError) {
  Tensor a = Tensor::ones({2, 3}), z = Tensor::ones({2, 3});
  expect_error_mentioning([&] { silu_gated_sum(a, Tensor::ones({3, 2}), z); },
                          {"silu_gated_sum", "b", "[3, 2]", "[2, 3]"});
  expect_error_mentioning([&] { silu_gated_sum(a, Tensor(), Tensor::ones({2, 4})); },
                          {"silu_gated_sum", "z", "[2, 4]"});
  expect_error_mentioning([&] { silu_gated_sum(a, a, z.to(DType::F64)); }, {"silu_gated_sum", "z", "float64"});
  expect_error_mentioning([&] { silu_gated_sum(Tensor(), a, z); }, {"silu_gated_sum", "a is undefined"});
  expect_error_mentioning([&] { silu_gated_sum(a, a, Tensor()); }, {"silu_gated_sum", "z is undefined"});
}

}  // namespace
}  // namespace engine

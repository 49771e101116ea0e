#include "engine/ops/dropout/dropout.h"
#include "engine/ops/reduce/reduce.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

TEST(Dropout, KeepsExpectedFractionAndScales) {
  Rng rng(51);
  const double p = 0.3;
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  std::vector<float> y = dropout(Tensor::ones({100000}), p, true, rng).to_floats();
  int64_t kept = 0;
  for (float v : y) {
    ASSERT_TRUE(v == 0.0f || v == scale) << v;
    kept += v != 0.0f;
  }
  // The kept fraction has a standard deviation of about 0.0015 here.
  EXPECT_NEAR(static_cast<double>(kept) / y.size(), 1.0 - p, 0.01);
}

TEST(Dropout, IdentityInEvaluationOrWithZeroProbability) {
  Rng rng(52);
  Tensor x = Tensor::randn({4, 5}, rng);
  EXPECT_EQ(dropout(x, 0.5, false, rng).to_floats(), x.to_floats());
  EXPECT_EQ(dropout(x, 0.0, true, rng).to_floats(), x.to_floats());
  EXPECT_EQ(drop_path(x, 0.5, false, rng).to_floats(), x.to_floats());
}

TEST(Dropout, BackwardUsesTheForwardMask) {
  Rng rng(53);
  Tensor x = Tensor::ones({1000}, DType::F64).set_requires_grad(true);
  Tensor y = dropout(x, 0.5, true, rng);
  sum(y).backward();
  EXPECT_EQ(x.grad().to_doubles(), y.to_doubles());  // d sum(x * mask) / dx = mask = y for x = 1
  // With a fixed seed per call the mask is a constant, so gradients check numerically.
  Tensor z = random_leaf({3, 4, 2}, rng);
  expect_gradients_match([](const auto& in) { Rng fixed(7); return dropout(in[0], 0.4, true, fixed); }, {z});
  expect_gradients_match([](const auto& in) { Rng fixed(7); return drop_path(in[0], 0.4, true, fixed); }, {z});
}

TEST(DropPath, ZeroesWholeSamples) {
  Rng rng(54);
  const int64_t samples = 400;
  std::vector<float> y = drop_path(Tensor::ones({samples, 3, 4}), 0.5, true, rng).to_floats();
  int64_t kept = 0;
  for (int64_t n = 0; n < samples; ++n) {
    const float first = y[n * 12];
    ASSERT_TRUE(first == 0.0f || first == 2.0f) << first;
    for (int64_t i = 1; i < 12; ++i) ASSERT_EQ(y[n * 12 + i], first) << "sample " << n;
    kept += first != 0.0f;
  }
  EXPECT_NEAR(static_cast<double>(kept) / samples, 0.5, 0.1);  // about 4 standard deviations
}

TEST(Dropout, ProbabilityOutsideRangeIsAnError) {
  Rng rng(55);
  Tensor x = Tensor::ones({4});
  for (double p : {-0.1, 1.0, 1.5}) {
    for (bool training : {true, false}) {
      EXPECT_THROW(dropout(x, p, training, rng), Error) << p;
      EXPECT_THROW(drop_path(x, p, training, rng), Error) << p;
    }
  }
}

}  // namespace
}  // namespace engine

#include <cmath>

#include "engine/ops/reduce/reduce.h"
#include "engine/ops/softmax/softmax.h"
#include "engine/ops/view/view.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

// Softmax of each row of a [rows, cols] tensor, computed naively in double.
std::vector<double> naive_softmax(const Tensor& x) {
  const int64_t cols = x.shape().back();
  std::vector<double> v = x.to_doubles();
  for (size_t start = 0; start < v.size(); start += cols) {
    double total = 0;
    for (int64_t i = 0; i < cols; ++i) total += std::exp(v[start + i]);
    for (int64_t i = 0; i < cols; ++i) v[start + i] = std::exp(v[start + i]) / total;
  }
  return v;
}

void expect_softmax_matches_naive(const Tensor& x, double tolerance) {
  std::vector<double> expected = naive_softmax(x);
  std::vector<double> probs = softmax(x).to_doubles(), log_probs = log_softmax(x).to_doubles();
  ASSERT_EQ(probs.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(probs[i], expected[i], tolerance) << "element " << i;
    EXPECT_NEAR(log_probs[i], std::log(expected[i]), tolerance) << "element " << i;
  }
}

TEST(Softmax, ForwardMatchesNaiveComputation) {
  Rng rng(11);
  expect_softmax_matches_naive(Tensor::randn({3, 5}, rng, DType::F32, 2.0), 1e-5);
  expect_softmax_matches_naive(Tensor::randn({2, 3, 4}, rng, DType::F64), 1e-12);
  // Large enough for the row loop to run on several threads.
  expect_softmax_matches_naive(Tensor::randn({96, 200}, rng, DType::F32, 3.0), 1e-5);
}

TEST(Softmax, RowsSumToOneAndLargeInputsAreStable) {
  Tensor x = Tensor::from_vector<float>({1000, 1001, 1002, -1000, -1001, -1002}, {2, 3});
  Tensor small = Tensor::from_vector<float>({0, 1, 2, 0, -1, -2}, {2, 3});
  expect_close(softmax(x), softmax(small), 1e-6);
  expect_close(log_softmax(x), log_softmax(small), 1e-6);
  EXPECT_NEAR(log_softmax(x).to_floats()[2], -0.40760596, 1e-6);  // log(e^2 / (1 + e + e^2))
  Rng rng(3);
  std::vector<float> row_sums = sum(softmax(Tensor::randn({4, 7}, rng, DType::F32, 5.0)), {1}).to_floats();
  for (float s : row_sums) EXPECT_NEAR(s, 1.0f, 1e-6);
}

TEST(Softmax, Gradients) {
  Rng rng(12);
  for (const Shape& shape : {Shape{7}, Shape{3, 5}, Shape{2, 3, 4}}) {
    Tensor x = random_leaf(shape, rng, -2.0, 2.0);
    expect_gradients_match([](const auto& in) { return softmax(in[0]); }, {x});
    expect_gradients_match([](const auto& in) { return log_softmax(in[0]); }, {x});
  }
  // Non-contiguous inputs: the rows run along a strided dimension.
  Tensor y = random_leaf({5, 3}, rng, -2.0, 2.0);
  expect_gradients_match([](const auto& in) { return softmax(transpose(in[0], 0, 1)); }, {y});
  expect_gradients_match([](const auto& in) { return log_softmax(narrow(in[0], 1, 1, 2)); }, {y});
}

TEST(Softmax, ParallelBackwardMatchesFormula) {
  Rng rng(13);
  Tensor x = random_leaf({96, 200}, rng, -3.0, 3.0);
  Tensor g = Tensor::randn({96, 200}, rng, DType::F64);
  Tensor y = softmax(x);
  y.backward(g);
  expect_close(x.grad(), y.detach() * (g - sum(g * y.detach(), {1}, true)), 1e-12);
  x.zero_grad();
  Tensor log_y = log_softmax(x);
  log_y.backward(g);
  expect_close(x.grad(), g - exp(log_y.detach()) * sum(g, {1}, true), 1e-12);
}

TEST(Softmax, Errors) {
  EXPECT_THROW(softmax(Tensor::full({}, 1.0)), Error);
  EXPECT_THROW(log_softmax(Tensor::arange(4)), Error);  // int64
}

}  // namespace
}  // namespace engine

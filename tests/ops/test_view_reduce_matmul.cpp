#include "engine/ops/matmul/matmul.h"
#include "engine/ops/reduce/reduce.h"
#include "engine/ops/view/view.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

TEST(View, ViewsShareStorageAndIndexCorrectly) {
  Tensor x = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor t = transpose(x, 0, 1);
  EXPECT_TRUE(t.same_storage(x));
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.contiguous().to_floats(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(narrow(x, 1, 1, 2).to_floats(), (std::vector<float>{1, 2, 4, 5}));
  EXPECT_EQ(select(x, 0, 1).to_floats(), (std::vector<float>{3, 4, 5}));
  EXPECT_EQ(select(x, 1, -1).to_floats(), (std::vector<float>{2, 5}));  // a negative index counts from the end
  EXPECT_EQ(expand(Tensor::from_vector<float>({7, 8}, {2, 1}), {2, 3}).to_floats(),
            (std::vector<float>{7, 7, 7, 8, 8, 8}));
  EXPECT_EQ(reshape(x, {3, -1}).shape(), (Shape{3, 2}));
  EXPECT_THROW(reshape(x, {4, -1}), Error);
  EXPECT_THROW(narrow(x, 1, 2, 2), Error);
}

TEST(View, Gradients) {
  Rng rng(5);
  Tensor x = random_leaf({2, 3, 4}, rng);
  expect_gradients_match([](const auto& in) { return permute(in[0], {2, 0, 1}); }, {x});
  expect_gradients_match([](const auto& in) { return narrow(in[0], 2, 1, 2); }, {x});
  expect_gradients_match([](const auto& in) { return reshape(transpose(in[0], 0, 2), {4, 6}); }, {x});
  expect_gradients_match([](const auto& in) { return select(in[0], 1, 2); }, {x});
  expect_gradients_match([](const auto& in) { return squeeze(unsqueeze(in[0], 1), 1); }, {x});
  Tensor row = random_leaf({1, 4}, rng);
  expect_gradients_match([](const auto& in) { return expand(in[0], {3, 3, 4}); }, {row});
}

TEST(Reduce, ValuesAndGradients) {
  Tensor x = Tensor::from_vector<float>({1, 5, 2, 7, 3, 0}, {2, 3});
  EXPECT_EQ(sum(x, {1}).to_floats(), (std::vector<float>{8, 10}));
  EXPECT_EQ(sum(x, {0}, true).shape(), (Shape{1, 3}));
  EXPECT_FLOAT_EQ(mean(x).item<float>(), 3.0f);
  MaxResult m = max(x, 1);
  EXPECT_EQ(m.values.to_floats(), (std::vector<float>{5, 7}));
  EXPECT_EQ(m.indices.to_ints(), (std::vector<int64_t>{1, 0}));

  Rng rng(6);
  Tensor y = random_leaf({3, 4, 5}, rng);
  expect_gradients_match([](const auto& in) { return sum(in[0], {0, 2}); }, {y});
  expect_gradients_match([](const auto& in) { return mean(in[0], {1}, true); }, {y});
  expect_gradients_match([](const auto& in) { return max(in[0], 1).values; }, {y});
  expect_gradients_match([](const auto& in) { return max(in[0], 0, true).values; }, {y});
  expect_gradients_match([](const auto& in) { return sum(transpose(in[0], 0, 1), {2}); }, {y});
}

// max propagates NaN: the first NaN of a row is its maximum (the CUDA kernel
// must agree: tests/cuda/test_cuda_ops.cpp).
TEST(Reduce, MaxOfRowsWithNans) {
  const float nan = std::nanf("");
  Tensor x = Tensor::from_vector<float>({nan, 1, 1, nan, nan, nan, 2, 3, -1, nan}, {5, 2});
  MaxResult m = max(x, 1);
  EXPECT_EQ(m.indices.to_ints(), (std::vector<int64_t>{0, 1, 0, 1, 1}));
  const std::vector<float> values = m.values.to_floats();
  for (int r : {0, 1, 2, 4}) EXPECT_TRUE(std::isnan(values[r])) << "row " << r;
  EXPECT_EQ(values[3], 3.0f);
}

// Ties: the first maximum of a row is its argmax (as in PyTorch; the CUDA
// kernel must agree), and the gradient goes to it alone.
TEST(Reduce, MaxOfRowsWithTiesPicksTheFirst) {
  Tensor x = Tensor::from_vector<double>({2, 5, 5, 1, 3, 3, 3, -1, 7, 5, 7, 7}, {3, 4});
  x.set_requires_grad(true);
  MaxResult m = max(x, 1);
  EXPECT_EQ(m.indices.to_ints(), (std::vector<int64_t>{1, 0, 0}));
  EXPECT_EQ(m.values.to_doubles(), (std::vector<double>{5, 3, 7}));
  sum(m.values * Tensor::from_vector<double>({1, 2, 3}, {3})).backward();
  EXPECT_EQ(x.grad().to_doubles(), (std::vector<double>{0, 1, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0}));
  EXPECT_EQ(argmax(x, 0).to_ints(), (std::vector<int64_t>{2, 0, 2, 2}));  // down the columns; column 1 ties at 5
}

// Float32 sums accumulate in double: in float32 arithmetic 2^24 plus a
// thousand ones stays 2^24 (each 1 is half a unit in the last place, rounded
// off to even), in double it is exact.
TEST(Reduce, Float32SumsAccumulateInDouble) {
  std::vector<float> values(1001, 1.0f);
  values[0] = 16777216.0f;
  const Tensor x = Tensor::from_vector(values, {1001});
  EXPECT_EQ(sum(x).item<float>(), 16778216.0f);
  EXPECT_EQ(sum(expand(x, {2, 1001}), {1}).to_floats(), (std::vector<float>{16778216.0f, 16778216.0f}));
}

TEST(Matmul, MatchesNaiveProduct) {
  Rng rng(8);
  Tensor a = Tensor::randn({3, 4}, rng);
  Tensor b = Tensor::randn({4, 5}, rng);
  Tensor c = matmul(a, b);
  std::vector<float> pa = a.to_floats(), pb = b.to_floats(), pc = c.to_floats();
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 5; ++j) {
      double expected = 0;
      for (int k = 0; k < 4; ++k) expected += pa[i * 4 + k] * pb[k * 5 + j];
      EXPECT_NEAR(pc[i * 5 + j], expected, 1e-5);
    }
  // A transposed view goes to BLAS as a transposed operand and gives the same result.
  expect_close(matmul(transpose(b, 0, 1).contiguous(), transpose(a, 0, 1)), transpose(c, 0, 1).contiguous(), 1e-5);
  EXPECT_THROW(matmul(a, a), Error);
}

TEST(Matmul, SizeOneBatchDimsWithAnyStride) {
  // unsqueeze gives the new size-1 dim stride 1; the batch of matrices is
  // still the outer dim's, every 12 (a) or 20 (b) elements.
  Rng rng(10);
  Tensor a = Tensor::randn({2, 3, 4}, rng);
  Tensor b = Tensor::randn({2, 4, 5}, rng);
  Tensor expected = matmul(a, b);
  expect_close(matmul(unsqueeze(a, 1), unsqueeze(b, 1)), unsqueeze(expected, 1).contiguous(), 1e-6);
  expect_close(matmul(unsqueeze(a, 0), unsqueeze(b, 0)), unsqueeze(expected, 0).contiguous(), 1e-6);
  // A row vector whose row stride (size-1 dim) is neither 1 nor its width.
  Tensor row = make_view(a, {2, 1, 4}, {12, 5, 1}, 0);
  expect_close(matmul(row, b), matmul(row.clone(), b), 1e-6);
  // Batch dims broadcast by expand (stride 0), alone or beside a real one.
  Tensor one = Tensor::randn({1, 3, 4}, rng), four = Tensor::randn({2, 3, 3, 4}, rng);
  expect_close(matmul(expand(one, {2, 3, 4}), b), matmul(expand(one, {2, 3, 4}).clone(), b), 1e-6);
  for (const Tensor& shared : {Tensor::randn({1, 1, 3, 4}, rng), Tensor::randn({1, 3, 3, 4}, rng)}) {
    const Tensor spread = expand(shared, {2, 3, 3, 4});  // batch strides (0, 0), then (0, 12)
    expect_close(matmul(four, transpose(spread, 2, 3)), matmul(four, transpose(spread.clone(), 2, 3)), 1e-6);
  }
  // Empty operands (k = 0: a product of zeros; m = 0: nothing to compute).
  expect_close(matmul(Tensor::zeros({3, 0}), Tensor::zeros({0, 4})), Tensor::zeros({3, 4}), 0.0);
  EXPECT_EQ(matmul(Tensor::zeros({2, 0, 4}), b).shape(), (Shape{2, 0, 5}));
}

TEST(Matmul, Gradients) {
  Rng rng(9);
  Tensor a = random_leaf({2, 3, 4}, rng);
  Tensor w = random_leaf({4, 5}, rng);
  Tensor b = random_leaf({2, 4, 5}, rng);
  expect_gradients_match([](const auto& in) { return matmul(in[0], in[1]); }, {a, w});
  expect_gradients_match([](const auto& in) { return matmul(in[0], in[1]); }, {a, b});
  expect_gradients_match([](const auto& in) { return matmul(transpose(in[1], 1, 2), transpose(in[0], 1, 2)); },
                         {a, b});
  Tensor weight = random_leaf({6, 4}, rng);
  Tensor bias = random_leaf({6}, rng);
  expect_gradients_match([](const auto& in) { return linear(in[0], in[1], in[2]); }, {a, weight, bias});
}

// The precision switch's values (the GPU behaviour is tested in the Cuda suite;
// CPU GEMMs ignore it).
TEST(GemmPrecision, ParsesTheConfigValuesAndCpuGemmsStayFloat32) {
  EXPECT_EQ(parse_gemm_precision("fp32"), GemmPrecision::Float32);
  EXPECT_EQ(parse_gemm_precision("bf16"), GemmPrecision::BFloat16);
  expect_error_mentioning([] { parse_gemm_precision("fp16"); }, {"fp16", "fp32, bf16"});
  Rng rng(10);
  Tensor a = Tensor::uniform({5, 7}, rng, -1, 1), b = Tensor::uniform({7, 3}, rng, -1, 1);
  const std::vector<double> exact = matmul(a, b).to_doubles();
  const GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
  EXPECT_EQ(gemm_precision(), GemmPrecision::BFloat16);
  EXPECT_EQ(matmul(a, b).to_doubles(), exact);
}

}  // namespace
}  // namespace engine

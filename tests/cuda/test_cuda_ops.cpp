// The CUDA backend against the CPU reference: every op runs on fresh random
// inputs on both devices; outputs and the gradients of a random-weighted sum
// must agree. Suites are named Cuda* so that `make test` skips them and
// `make test-gpu` runs them; without a GPU every test skips.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine/ops/ops.h"
#include "engine/optim/optimizer.h"
#include "engine/random.h"
#include "models/vit_checkpoint.h"
#include "tests/cuda/cuda_expect.h"
#include "tests/shared_data.h"

namespace engine {
namespace {

Device gpu() { return Device::cuda(); }

double tolerance_for(DType dtype) { return dtype == DType::F64 ? 1e-12 : 1e-5; }

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// Runs f on the inputs on the CPU and on copies of them on the GPU, and
// compares the outputs. When the output is differentiable, also backpropagates
// sum(f(inputs) * W) (W random, the same on both devices) and compares the
// gradients of the floating-point inputs.
void expect_gpu_matches_cpu(const std::string& what, const Fn& f, const std::vector<Tensor>& inputs,
                            double tolerance) {
  std::vector<Tensor> on_cpu, on_gpu;
  for (const Tensor& x : inputs) {
    Tensor c = x.detach(), g = x.detach().to(gpu());
    if (is_floating(x.dtype())) {
      c.set_requires_grad(true);
      g.set_requires_grad(true);
    }
    on_cpu.push_back(c);
    on_gpu.push_back(g);
  }
  const Tensor expected = f(on_cpu), actual = f(on_gpu);
  ASSERT_TRUE(actual.device().is_cuda()) << what;
  ASSERT_EQ(actual.dtype(), expected.dtype()) << what;
  expect_matches(actual, expected, tolerance, what + " forward");
  if (!expected.requires_grad()) return;
  Rng rng(99);
  const Tensor weights = Tensor::uniform(expected.shape(), rng, 0.5, 1.5, expected.dtype());
  sum(mul(expected, weights)).backward();
  sum(mul(actual, weights.to(gpu()))).backward();
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!on_cpu[i].grad().defined()) {  // an input the op does not differentiate (a detached teacher)
      EXPECT_FALSE(on_gpu[i].grad().defined()) << what << ": a gradient for input " << i << " on the GPU only";
      continue;
    }
    ASSERT_TRUE(on_gpu[i].grad().defined()) << what << ": no gradient for input " << i;
    EXPECT_TRUE(on_gpu[i].grad().device().is_cuda()) << what;
    expect_matches(on_gpu[i].grad(), on_cpu[i].grad(), tolerance, what + " grad of input " + std::to_string(i));
  }
}

// ---------------------------------------------------------------- float ops, float32 and float64

class CudaOps : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  }
  DType dtype() const { return GetParam(); }
  double tolerance() const { return tolerance_for(dtype()); }
  Tensor uniform(const Shape& shape, double low = -1.0, double high = 1.0) {
    return Tensor::uniform(shape, rng_, low, high, dtype());
  }
  // scale > 1 widens the float32 tolerance where a gradient is a difference of
  // row sums, so CPU and GPU summation orders differ by more than 1e-5.
  void expect_same(const std::string& what, const Fn& f, const std::vector<Tensor>& inputs, double scale = 1.0) {
    expect_gpu_matches_cpu(what, f, inputs, dtype() == DType::F32 ? scale * tolerance() : tolerance());
  }

 private:
  Rng rng_{1234};
};

TEST_P(CudaOps, ContiguousCopiesOfViews) {
  Tensor x = uniform({4, 5, 6});
  expect_same("permute", [](const auto& in) { return permute(in[0], {2, 0, 1}).contiguous(); }, {x});
  expect_same("narrow", [](const auto& in) { return narrow(in[0], 1, 1, 3).contiguous(); }, {x});
  expect_same("select", [](const auto& in) { return select(in[0], 2, 4).contiguous(); }, {x});
  expect_same("expand", [](const auto& in) { return expand(narrow(in[0], 0, 0, 1), {3, 5, 6}).contiguous(); }, {x});
}

TEST_P(CudaOps, BinaryWithBroadcasting) {
  Tensor a = uniform({4, 3, 5}), b = uniform({5, 3}, 0.5, 2.0), c = uniform({3, 1, 5}), d = uniform({1, 5}, 0.5, 2.0);
  // b transposed: a non-contiguous operand broadcast along the batch dim.
  expect_same("add", [](const auto& in) { return add(in[0], transpose(in[1], 0, 1)); }, {a, b});
  expect_same("sub", [](const auto& in) { return sub(transpose(in[1], 0, 1), in[0]); }, {a, b});
  expect_same("mul", [](const auto& in) { return mul(in[0], in[1]); }, {c, d});
  expect_same("div", [](const auto& in) { return div(in[0], transpose(in[1], 0, 1)); }, {a, b});
  expect_same("div broadcast both", [](const auto& in) { return div(in[0], in[1]); }, {c, d});
  // Same-shape contiguous operands take the dense kernels (vectors and a tail
  // of 3 elements); one starting an element into its storage the generic one.
  Tensor e = uniform({3, 7, 11}), f = uniform({3, 7, 11}, 0.5, 2.0), g = uniform({232});
  expect_same("dense add", [](const auto& in) { return add(in[0], in[1]); }, {e, f});
  expect_same("dense div", [](const auto& in) { return div(in[0], in[1]); }, {e, f});
  expect_same("misaligned mul", [](const auto& in) { return mul(narrow(in[0], 0, 1, 231), in[1]); },
              {g, reshape(f, {231})});
}

TEST_P(CudaOps, UnaryForwardAndBackward) {
  const std::vector<std::pair<const char*, Tensor (*)(const Tensor&)>> any_sign = {
      {"neg", neg}, {"exp", exp}, {"tanh", tanh}, {"sigmoid", sigmoid}, {"gelu", gelu},
      {"silu", silu}, {"relu", relu}, {"abs", abs}};
  const std::vector<std::pair<const char*, Tensor (*)(const Tensor&)>> positive = {
      {"log", log}, {"sqrt", sqrt}, {"reciprocal", reciprocal}};
  Tensor x = uniform({6, 7}, -3.0, 3.0), p = uniform({6, 7}, 0.5, 2.0);
  for (const auto& [name, op] : any_sign) {
    // Through a transpose: the op makes its input contiguous first.
    expect_same(name, [op = op](const auto& in) { return op(transpose(in[0], 0, 1)); }, {x});
  }
  for (const auto& [name, op] : positive) expect_same(name, [op = op](const auto& in) { return op(in[0]); }, {p});
  // Both branches of softplus (x > 20 returns x).
  expect_same("softplus", [](const auto& in) { return softplus(in[0]); }, {uniform({50}, -30.0, 30.0)});
}

TEST_P(CudaOps, SiluGatedSum) {
  // Odd sizes: vectors plus a tail; views: a transposed z and a misaligned b
  // (one element into its storage), which take the element-by-element kernels.
  const Shape shape = {3, 65, 385};
  const int64_t n = shape_numel(shape);
  Tensor a = uniform(shape, -2.0, 2.0), b = uniform(shape, -2.0, 2.0), z = uniform(shape, -4.0, 4.0);
  Tensor zt = uniform({3, 385, 65}, -4.0, 4.0), wide = uniform({n + 1}, -2.0, 2.0);
  expect_same("silu_gated_sum", [](const auto& in) { return silu_gated_sum(in[0], in[1], in[2]); }, {a, b, z});
  expect_same("silu_gated_sum without b", [](const auto& in) { return silu_gated_sum(in[0], Tensor(), in[1]); },
              {a, z});
  expect_same("silu_gated_sum of transposed z",
              [](const auto& in) { return silu_gated_sum(in[0], in[1], transpose(in[2], 1, 2)); }, {a, b, zt});
  expect_same("silu_gated_sum of misaligned b",
              [shape, n](const auto& in) {
                return silu_gated_sum(in[0], reshape(narrow(in[1], 0, 1, n), shape), in[2]);
              },
              {a, wide, z});
}

TEST_P(CudaOps, ScalarOps) {
  Tensor x = uniform({5, 8}, 0.5, 2.0);
  expect_same("add scalar", [](const auto& in) { return add(in[0], 1.5); }, {x});
  expect_same("mul scalar", [](const auto& in) { return mul(narrow(in[0], 1, 2, 5), -0.75); }, {x});
  expect_same("pow", [](const auto& in) { return pow(in[0], 2.5); }, {x});
  expect_same("greater_equal", [](const auto& in) { return greater_equal(in[0], 1.25); }, {x});
}

TEST_P(CudaOps, SumMeanMax) {
  Tensor x = uniform({4, 6, 5});
  expect_same("sum dim 1", [](const auto& in) { return sum(in[0], {1}); }, {x});
  expect_same("sum dims 0 2 keepdim", [](const auto& in) { return sum(in[0], {0, 2}, true); }, {x});
  expect_same("sum all", [](const auto& in) { return sum(in[0]); }, {x});
  expect_same("mean dim -1", [](const auto& in) { return mean(in[0], {-1}); }, {x});
  expect_same("mean of transposed", [](const auto& in) { return mean(transpose(in[0], 0, 2), {1}); }, {x});
  expect_same("max dim 1", [](const auto& in) { return max(in[0], 1).values; }, {x});
  expect_same("max dim 0 keepdim", [](const auto& in) { return max(in[0], 0, true).values; }, {x});
  expect_same("argmax", [](const auto& in) { return argmax(in[0], 2); }, {x});
  // A long row: the float32 sum accumulates in double on both devices.
  expect_same("long sum", [](const auto& in) { return sum(in[0], {1}); }, {uniform({3, 100000})});
  expect_same("many short rows", [](const auto& in) { return sum(in[0], {1}); }, {uniform({5000, 3})});
  // One row cut into chunks that do not divide it (a loss's mean), and no rows at all.
  expect_same("mean of everything", [](const auto& in) { return mean(in[0]); }, {uniform({64, 65, 31})});
  expect_same("long rows, none of them", [](const auto& in) { return sum(in[0], {1}); }, {uniform({0, 100000})});
}

TEST_P(CudaOps, ArgmaxTakesTheFirstOfTiedMaxima) {
  std::vector<double> values(2 * 300, 0.0);
  for (int64_t r = 0; r < 2; ++r) {
    for (int64_t i : {17, 100, 298}) values[r * 300 + i + r] = 5.0;  // ties at 17, 100, 298 (+ r)
  }
  Tensor x = Tensor::from_vector(values, {2, 300}).to(dtype());
  EXPECT_EQ(argmax(x.to(gpu()), 1).to_ints(), (std::vector<int64_t>{17, 18}));
  expect_same("max with ties", [](const auto& in) { return max(in[0], 1).values; }, {x});
}

// A NaN is a row's maximum, the first one winning, as on the CPU; an all-NaN
// row used to give index INT64_MAX, and its backward wrote out of bounds.
TEST_P(CudaOps, MaxPropagatesNans) {
  const double nan = std::nan("");
  std::vector<double> values(6 * 300, 0.5);
  values[0 * 300 + 7] = nan;                                  // one NaN
  for (int64_t i = 0; i < 300; ++i) values[1 * 300 + i] = nan;  // all NaN
  values[2 * 300 + 299] = nan;                                 // the last element
  values[3 * 300 + 40] = 9.0;                                  // no NaN
  values[4 * 300 + 5] = 9.0, values[4 * 300 + 250] = nan;      // a number, then a NaN
  values[5 * 300 + 120] = nan, values[5 * 300 + 30] = nan;     // two NaNs
  Tensor x = Tensor::from_vector(values, {6, 300}).to(dtype());
  x.set_requires_grad(true);
  Tensor gx = x.detach().to(gpu());
  gx.set_requires_grad(true);
  MaxResult cpu = max(x, 1), cuda = max(gx, 1);
  EXPECT_EQ(cuda.indices.to_ints(), (std::vector<int64_t>{7, 0, 299, 40, 250, 30}));
  EXPECT_EQ(cuda.indices.to_ints(), cpu.indices.to_ints());
  sum(cuda.values).backward();
  sum(cpu.values).backward();
  EXPECT_EQ(gx.grad().to_doubles(), x.grad().to_doubles());
}

TEST_P(CudaOps, Matmul) {
  Tensor a = uniform({7, 5}), b = uniform({5, 6}), at = uniform({5, 7}), bt = uniform({6, 5});
  expect_same("2-D", [](const auto& in) { return matmul(in[0], in[1]); }, {a, b});
  expect_same("a transposed", [](const auto& in) { return matmul(transpose(in[0], 0, 1), in[1]); }, {at, b});
  expect_same("b transposed", [](const auto& in) { return matmul(in[0], transpose(in[1], 0, 1)); }, {a, bt});
  expect_same("both transposed",
              [](const auto& in) { return matmul(transpose(in[0], 0, 1), transpose(in[1], 0, 1)); }, {at, bt});
  Tensor x = uniform({3, 4, 5}), y = uniform({3, 5, 2}), yt = uniform({3, 2, 5});
  expect_same("batched", [](const auto& in) { return matmul(in[0], in[1]); }, {x, y});
  expect_same("batched, b transposed", [](const auto& in) { return matmul(in[0], transpose(in[1], -1, -2)); },
              {x, yt});
  expect_same("3-D @ 2-D", [](const auto& in) { return matmul(in[0], in[1]); }, {x, uniform({5, 6})});
  // An expanded operand: batch stride 0.
  expect_same("broadcast batch",
              [](const auto& in) { return matmul(in[0], expand(unsqueeze(in[1], 0), {3, 5, 6})); },
              {x, uniform({5, 6})});
  expect_same("4-D", [](const auto& in) { return matmul(in[0], in[1]); }, {uniform({2, 3, 4, 5}), uniform({2, 3, 5, 3})});
  expect_same("larger", [](const auto& in) { return matmul(in[0], in[1]); }, {uniform({64, 128}), uniform({128, 96})});
  expect_same("linear", [](const auto& in) { return linear(in[0], in[1], in[2]); },
              {uniform({2, 9, 16}), uniform({12, 16}), uniform({12})});
}

// precision = bf16: float32 GEMMs with operands rounded to bfloat16 (8
// significant bits, relative error <= 2^-9 each) and float32 accumulation;
// over K = 96 random terms the result stays within ~1e-2 of the scale.
TEST(CudaGemmPrecision, Bf16InputsMatchFloat32WithinBf16Rounding) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  Rng rng(7);
  auto uniform = [&](const Shape& shape) { return Tensor::uniform(shape, rng, -1.0, 1.0, DType::F32); };
  const GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
  const double tolerance = 1e-2;
  expect_gpu_matches_cpu("2-D", [](const auto& in) { return matmul(in[0], in[1]); },
                         {uniform({64, 96}), uniform({96, 80})}, tolerance);
  expect_gpu_matches_cpu("b transposed (linear)", [](const auto& in) { return linear(in[0], in[1], in[2]); },
                         {uniform({2, 33, 96}), uniform({40, 96}), uniform({40})}, tolerance);
  expect_gpu_matches_cpu("batched, a transposed",
                         [](const auto& in) { return matmul(transpose(in[0], -1, -2), in[1]); },
                         {uniform({3, 96, 20}), uniform({3, 96, 24})}, tolerance);
  expect_gpu_matches_cpu("broadcast batch",
                         [](const auto& in) { return matmul(in[0], expand(unsqueeze(in[1], 0), {3, 96, 16})); },
                         {uniform({3, 8, 96}), uniform({96, 16})}, tolerance);
  // Operands that start inside their storage (q, k, v sliced from one qkv tensor).
  expect_gpu_matches_cpu("views at an offset",
                         [](const auto& in) {
                           return matmul(select(in[0], 0, 1), transpose(select(in[0], 0, 2), -1, -2));
                         },
                         {uniform({3, 4, 33, 96})}, tolerance);
  // And the rounding is really there: bf16 results differ from float32 ones.
  Tensor a = uniform({64, 96}).to(gpu()), b = uniform({96, 80}).to(gpu());
  const Tensor rounded = matmul(a, b);
  Tensor exact;
  {
    const GemmPrecisionGuard fp32(GemmPrecision::Float32);
    exact = matmul(a, b);
  }
  EXPECT_NE(rounded.to_doubles(), exact.to_doubles());
}

TEST_P(CudaOps, SoftmaxAndLogSoftmax) {
  // Large logits: only a max-subtracting kernel stays finite.
  Tensor x = add(mul(uniform({6, 37}), 5.0), 100.0);
  expect_same("softmax", [](const auto& in) { return softmax(in[0]); }, {x});
  expect_same("log_softmax", [](const auto& in) { return log_softmax(in[0]); }, {x});
  expect_same("softmax of transposed", [](const auto& in) { return softmax(transpose(in[0], 0, 1)); }, {x});
  expect_same("long rows", [](const auto& in) { return log_softmax(in[0]); }, {uniform({3, 3000}, -4.0, 4.0)});
  // Rows up to 1,024 elements sit in a warp's registers, 1 to 32 per lane:
  // every width, a full last lane (1,024) and the first generic length (1,025).
  for (int64_t cols : {10, 40, 65, 197, 300, 1024, 1025}) {
    const Tensor rows = uniform({7, cols}, -6.0, 6.0);
    expect_same(fmt::format("softmax, rows of {}", cols), [](const auto& in) { return softmax(in[0]); }, {rows});
    expect_same(fmt::format("log_softmax, rows of {}", cols), [](const auto& in) { return log_softmax(in[0]); },
                {rows});
  }
  // Masked entries (-inf, as attention's masked keys) get probability 0, in registers and generic.
  for (int64_t cols : {197, 1500}) {
    std::vector<uint8_t> every_seventh(static_cast<size_t>(5 * cols));
    for (size_t i = 3; i < every_seventh.size(); i += 7) every_seventh[i] = 1;
    const Tensor mask = Tensor::from_vector(every_seventh, {5, cols});
    expect_same(fmt::format("softmax with masked entries, rows of {}", cols),
                [&mask](const auto& in) { return softmax(masked_fill(in[0], mask.to(in[0].device()), -INFINITY)); },
                {uniform({5, cols}, -6.0, 6.0)});
  }
  // More rows than the grid has warps (65,535 blocks of 4): warps take several.
  expect_same("many short rows", [](const auto& in) { return softmax(in[0]); }, {uniform({262300, 3}, -6.0, 6.0)});
}

TEST_P(CudaOps, LayerNorm) {
  // 300 rows: several chunks of row partials for dweight / dbias.
  Tensor x = add(uniform({300, 192}), 3.0), w = uniform({192}), b = uniform({192});
  expect_same("affine", [](const auto& in) { return layer_norm(in[0], in[1], in[2], 1e-5); }, {x, w, b});
  // x passed on too: its gradient through the passed-on copy is added by the
  // backward kernels (register rows, and the general version's 33 columns).
  for (const Shape& shape : {Shape{300, 192}, Shape{40, 33}}) {
    expect_same("passing the input on", [](const auto& in) {
      const std::vector<Tensor> out = layer_norm_passing_input(in[0], in[1], in[2], 1e-5, in[0].dtype());
      return add(mul(out[0], 0.7), out[1]);
    }, {uniform(shape), uniform({shape[1]}), uniform({shape[1]})});
  }
  // Without an affine weight, dx is a small difference of row sums: measured 1.1e-5 relative.
  expect_same("no affine", [](const auto& in) { return layer_norm(in[0], Tensor(), Tensor(), 1e-6); }, {x}, 4.0);
  expect_same("weight only, transposed input",
              [](const auto& in) { return layer_norm(transpose(in[0], 0, 1), in[1], Tensor(), 1e-5); },
              {uniform({5, 33}), uniform({5})});
  expect_same("many rows", [](const auto& in) { return layer_norm(in[0], in[1], in[2], 1e-6); },
              {uniform({2, 1000, 8}), uniform({8}), uniform({8})});
  expect_same("rows for a warp each", [](const auto& in) { return layer_norm(in[0], in[1], in[2], 1e-6); },
              {add(uniform({4100, 192}), 2.0), uniform({192}), uniform({192})}, 4.0);
  // Float32 rows of up to 1024 elements live in registers, 8 float4s a lane
  // at most; more rows than 1024 blocks of 4 warps (each warp then takes
  // several rows into its partial sums); 1028 is past the register version.
  expect_same("longest register rows", [](const auto& in) { return layer_norm(in[0], in[1], in[2], 1e-6); },
              {uniform({40, 1024}), uniform({1024}), uniform({1024})}, 4.0);
  expect_same("more rows than the backward's warps",
              [](const auto& in) { return layer_norm(in[0], in[1], Tensor(), 1e-6); },
              {uniform({4500, 12}), uniform({12})}, 4.0);
  expect_same("rows one float4 past the register version",
              [](const auto& in) { return layer_norm(in[0], in[1], in[2], 1e-6); },
              {uniform({6, 1028}), uniform({1028}), uniform({1028})}, 4.0);
}

TEST_P(CudaOps, CrossEntropyAndOtherLosses) {
  Tensor logits = mul(uniform({16, 10}), 4.0);
  std::vector<int64_t> label_values(16);
  for (size_t i = 0; i < label_values.size(); ++i) label_values[i] = static_cast<int64_t>(i * 7 % 10);
  Tensor labels = Tensor::from_vector(label_values, {16});
  expect_same("cross_entropy", [](const auto& in) { return cross_entropy(in[0], in[1]); }, {logits, labels});
  expect_same("cross_entropy smoothed", [](const auto& in) { return cross_entropy(in[0], in[1], 0.1); },
              {logits, labels});
  expect_same("cross_entropy many classes", [](const auto& in) { return cross_entropy(in[0], in[1]); },
              {uniform({4, 1000}), Tensor::from_vector<int64_t>({0, 999, 500, 3}, {4})});
  std::vector<int64_t> many_labels(5000);
  for (size_t i = 0; i < many_labels.size(); ++i) many_labels[i] = static_cast<int64_t>(i * 3 % 10);
  expect_same("cross_entropy, a warp per row", [](const auto& in) { return cross_entropy(in[0], in[1], 0.1); },
              {mul(uniform({5000, 10}), 4.0), Tensor::from_vector(many_labels, {5000})});
  Tensor targets = softmax(uniform({16, 10}));
  expect_same("soft_cross_entropy", [](const auto& in) { return soft_cross_entropy(in[0], in[1]); },
              {logits, targets});
  expect_same("mse", [](const auto& in) { return mse_loss(in[0], in[1]); }, {uniform({5, 3}), uniform({5, 3})});
  expect_same("kl_div", [](const auto& in) { return kl_div_with_temperature(in[0], in[1], 2.0); },
              {logits, uniform({16, 10})});
}

TEST_P(CudaOps, IndexOpsWithDuplicateIndices) {
  Tensor x = uniform({5, 4, 3});
  Tensor rows = Tensor::from_vector<int64_t>({2, 0, 2, 2, 4, 1}, {6});
  expect_same("index_select dim 0", [](const auto& in) { return index_select(in[0], 0, in[1]); }, {x, rows});
  expect_same("index_select dim 2 of a transposed input",
              [](const auto& in) { return index_select(transpose(in[0], 0, 2), 2, in[1]); }, {x, rows});
  Tensor picks = Tensor::from_vector<int64_t>({0, 0, 3, 1, 3, 3, 2, 0}, {2, 4, 1});
  expect_same("gather dim 1", [](const auto& in) { return gather(in[0], 1, expand(in[1], {2, 4, 3})); }, {x, picks});
  expect_same("gather smaller index", [](const auto& in) { return gather(in[0], 0, in[1]); },
              {x, Tensor::from_vector<int64_t>({4, 4, 0, 1, 4, 2}, {2, 1, 3})});
}

TEST_P(CudaOps, WhereMaskedFillConcatSplit) {
  Tensor a = uniform({4, 5}), b = uniform({5});
  Tensor condition = Tensor::from_vector<uint8_t>({1, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0, 1}, {4, 5});
  Tensor column_mask = Tensor::from_vector<uint8_t>({1, 0, 0, 1}, {4, 1});
  expect_same("where", [](const auto& in) { return where(in[2], in[0], in[1]); }, {a, b, condition});
  expect_same("masked_fill", [](const auto& in) { return masked_fill(transpose(in[0], 0, 1), in[1], -2.5); },
              {uniform({4, 5}), Tensor::from_vector<uint8_t>({1, 0, 1, 1}, {4})});
  expect_same("masked_fill by column", [](const auto& in) { return masked_fill(in[0], in[1], 7.0); },
              {a, column_mask});
  expect_same("concat", [](const auto& in) { return concat({in[0], transpose(in[1], 0, 1)}, 0); },
              {uniform({2, 3}), uniform({3, 4})});
  expect_same("split", [](const auto& in) { return mul(split(in[0], {2, 3}, 1)[1], 2.0); }, {a});
}

TEST_P(CudaOps, PatchConvolution) {
  expect_same("patch_conv2d", [](const auto& in) { return patch_conv2d(in[0], in[1], in[2]); },
              {uniform({2, 3, 8, 12}), uniform({5, 3, 4, 4}), uniform({5})});
  // Patch rows of 3: the kernels' element-by-element version (4 went as vectors).
  expect_same("patch 3", [](const auto& in) { return patch_conv2d(in[0], in[1], in[2]); },
              {uniform({2, 3, 9, 6}), uniform({5, 3, 3, 3}), uniform({5})});
}

TEST_P(CudaOps, Cumsum) {
  Tensor x = uniform({3, 4, 5});
  for (int64_t dim : {0, 1, 2, -1}) {
    expect_same("cumsum dim " + std::to_string(dim), [dim](const auto& in) { return cumsum(in[0], dim); }, {x});
  }
  expect_same("cumsum of transposed", [](const auto& in) { return cumsum(transpose(in[0], 0, 2), 1); }, {x});
}

// ---------------------------------------------------------------- awkward shapes (review)
// Sizes that are 1, below a warp, or not a multiple of a kernel's vector or
// tile width, and views that start off the 16-byte alignment that the
// vectorised versions need (they must fall back, not fault or misread).

TEST_P(CudaOps, CumsumAwkwardShapes) {
  // Length 1, one line, lines longer than a block, a dim of 1 between others.
  for (const Shape& shape : {Shape{1}, Shape{1, 1, 1}, Shape{2, 1, 7}, Shape{1, 300}, Shape{300, 1}, Shape{3, 1, 257}}) {
    for (int64_t dim = 0; dim < static_cast<int64_t>(shape.size()); ++dim) {
      expect_same(fmt::format("cumsum of {} along {}", shape_str(shape), dim),
                  [dim](const auto& in) { return cumsum(in[0], dim); }, {uniform(shape)});
    }
  }
  // A misaligned view (one element into its storage).
  expect_same("cumsum of a misaligned view",
              [](const auto& in) { return cumsum(reshape(narrow(in[0], 0, 1, 35), {5, 7}), 1); }, {uniform({36})});
}

TEST_P(CudaOps, SoftmaxAwkwardShapes) {
  // One column (a lane holding one element, 31 lanes of padding), one row,
  // widths just past a power of two in the register version.
  for (const Shape& shape : {Shape{1, 1}, Shape{5, 1}, Shape{1, 2}, Shape{1, 33}, Shape{3, 129}, Shape{1, 1025}}) {
    const Tensor x = uniform(shape, -6.0, 6.0);
    expect_same("softmax " + shape_str(shape), [](const auto& in) { return softmax(in[0]); }, {x});
    expect_same("log_softmax " + shape_str(shape), [](const auto& in) { return log_softmax(in[0]); }, {x});
  }
  // Rows that start one element into the storage (the register rows read element by element anyway).
  expect_same("softmax of a misaligned view",
              [](const auto& in) { return softmax(reshape(narrow(in[0], 0, 1, 7 * 37), {7, 37})); },
              {uniform({7 * 37 + 1}, -6.0, 6.0)});
}

TEST_P(CudaOps, LayerNormAwkwardShapes) {
  // float32 rows of a multiple of 4 up to 1024 take the register version only
  // when x, the weight and the bias start on 16 bytes: views one element in
  // must take the generic version, for x and for the weight.
  const int64_t rows = 9, cols = 192;
  expect_same("layer_norm of a misaligned x",
              [rows, cols](const auto& in) {
                return layer_norm(reshape(narrow(in[0], 0, 1, rows * cols), {rows, cols}), in[1], in[2], 1e-5);
              },
              {uniform({rows * cols + 1}), uniform({cols}), uniform({cols})}, 4.0);
  expect_same("layer_norm with a misaligned weight",
              [cols](const auto& in) { return layer_norm(in[0], narrow(in[1], 0, 1, cols), in[2], 1e-5); },
              {uniform({rows, cols}), uniform({cols + 1}), uniform({cols})}, 4.0);
  // One row; rows of 4 (a lane's single float4, most lanes past the row); one
  // column (variance 0); 7 and 33 columns (not float4s).
  for (const Shape& shape : {Shape{1, 192}, Shape{5, 4}, Shape{6, 1}, Shape{1, 7}, Shape{3, 33}}) {
    expect_same("layer_norm " + shape_str(shape),
                [](const auto& in) { return layer_norm(in[0], in[1], in[2], 1e-5); },
                {uniform(shape), uniform({shape[1]}), uniform({shape[1]})}, 4.0);
  }
}

TEST_P(CudaOps, ReductionsAwkwardShapes) {
  // Rows of 1, a single element, rows just past a warp and a block, and one
  // row cut into two chunks of unequal length.
  for (const Shape& shape : {Shape{1, 1}, Shape{7, 1}, Shape{1, 33}, Shape{3, 257}, Shape{1, 16385}}) {
    const Tensor x = uniform(shape);
    expect_same("sum " + shape_str(shape), [](const auto& in) { return sum(in[0], {1}); }, {x});
    expect_same("max " + shape_str(shape), [](const auto& in) { return max(in[0], 1).values; }, {x});
    expect_same("argmax " + shape_str(shape), [](const auto& in) { return argmax(in[0], 1); }, {x});
    expect_same("mean of all " + shape_str(shape), [](const auto& in) { return mean(in[0]); }, {x});
  }
}

TEST_P(CudaOps, CrossEntropyAwkwardShapes) {
  // One class, one row, and classes just past a warp.
  expect_same("cross_entropy, one class", [](const auto& in) { return cross_entropy(in[0], in[1], 0.1); },
              {uniform({3, 1}), Tensor::from_vector<int64_t>({0, 0, 0}, {3})});
  expect_same("cross_entropy, one row", [](const auto& in) { return cross_entropy(in[0], in[1]); },
              {uniform({1, 33}), Tensor::from_vector<int64_t>({32}, {1})});
}

TEST_P(CudaOps, PatchConvolutionAwkwardShapes) {
  // Patch rows that the 16-byte version would take (patch and width a
  // multiple of 16 bytes of elements), but from an image starting one element
  // into its storage: the element-by-element version must take them.
  const Shape image = {2, 3, 8, 16};
  const int64_t n = shape_numel(image);
  expect_same("patch 4 of a misaligned image",
              [image, n](const auto& in) { return patch_conv2d(reshape(narrow(in[0], 0, 1, n), image), in[1], in[2]); },
              {uniform({n + 1}), uniform({5, 3, 4, 4}), uniform({5})});
  // Patch 1 and 2, one image of one channel, one patch per image.
  expect_same("patch 1", [](const auto& in) { return patch_conv2d(in[0], in[1], in[2]); },
              {uniform({1, 1, 3, 5}), uniform({2, 1, 1, 1}), uniform({2})});
  expect_same("patch 2", [](const auto& in) { return patch_conv2d(in[0], in[1], in[2]); },
              {uniform({2, 3, 4, 6}), uniform({3, 3, 2, 2}), uniform({3})});
  expect_same("one patch per image", [](const auto& in) { return patch_conv2d(in[0], in[1], Tensor()); },
              {uniform({3, 2, 8, 8}), uniform({4, 2, 8, 8})});
}

TEST_P(CudaOps, IndexOpsAwkwardShapes) {
  // A single index, a dim of size 1, and an index longer than the input.
  Tensor x = uniform({1, 5, 1});
  expect_same("index_select of one row", [](const auto& in) { return index_select(in[0], 1, in[1]); },
              {x, Tensor::from_vector<int64_t>({3}, {1})});
  expect_same("index_select along a dim of 1", [](const auto& in) { return index_select(in[0], 2, in[1]); },
              {x, Tensor::from_vector<int64_t>({0, 0, 0, 0, 0, 0, 0}, {7})});
  expect_same("gather along a dim of 1", [](const auto& in) { return gather(in[0], 0, in[1]); },
              {x, Tensor::from_vector<int64_t>({0, 0, 0}, {1, 3, 1})});
}

TEST_P(CudaOps, Dropout) {
  // The mask is drawn on the host: the same seed gives the same mask on both devices.
  expect_same("dropout", [](const auto& in) {
    Rng rng(5);
    return dropout(in[0], 0.3, true, rng);
  }, {uniform({8, 9})});
  expect_same("drop_path", [](const auto& in) {
    Rng rng(6);
    return drop_path(in[0], 0.5, true, rng);
  }, {uniform({8, 3, 2})});
}

// Parameters on both devices with the same values and, each step, the same
// fresh gradients; after the steps the parameters and states must agree.
void expect_optimizer_matches(const char* what, DType dtype,
                              const std::function<std::unique_ptr<Optimizer>(std::vector<ParamGroup>)>& make) {
  Rng rng(21);
  std::vector<Tensor> cpu_params, gpu_params;
  // The last is cut into several chunks by the multi-tensor kernels, with a tail.
  for (const Shape& shape : {Shape{4, 6}, Shape{6}, Shape{3, 2, 5}, Shape{3, 30001}}) {
    Tensor p = Tensor::uniform(shape, rng, -1.0, 1.0, dtype);
    cpu_params.push_back(p.clone().set_requires_grad(true).set_name("p" + std::to_string(cpu_params.size())));
    gpu_params.push_back(p.to(gpu()).set_requires_grad(true).set_name(cpu_params.back().name()));
  }
  // One starting an element into its storage: on the GPU no chunk of it is 16-byte aligned.
  const Tensor unaligned = Tensor::uniform({30002}, rng, -1.0, 1.0, dtype);
  cpu_params.push_back(narrow(unaligned, 0, 1, 30001).clone().set_requires_grad(true).set_name("p_unaligned"));
  gpu_params.push_back(
      narrow(unaligned.to(gpu()), 0, 1, 30001).detach().set_requires_grad(true).set_name("p_unaligned"));
  auto cpu_opt = make(decay_groups(cpu_params, 0.05));
  auto gpu_opt = make(decay_groups(gpu_params, 0.05));
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < cpu_params.size(); ++i) {
      Tensor g = Tensor::uniform(cpu_params[i].shape(), rng, -1.0, 1.0, dtype);
      cpu_params[i].set_grad(g);
      gpu_params[i].set_grad(g.to(gpu()));
    }
    cpu_opt->step();
    gpu_opt->step();
  }
  const double tolerance = tolerance_for(dtype);
  for (size_t i = 0; i < cpu_params.size(); ++i) {
    expect_matches(gpu_params[i], cpu_params[i], tolerance, std::string(what) + " param " + std::to_string(i));
  }
  const NamedTensors cpu_state = cpu_opt->state(), gpu_state = gpu_opt->state();
  ASSERT_EQ(cpu_state.size(), gpu_state.size());
  for (size_t i = 0; i < cpu_state.size(); ++i) {
    expect_matches(gpu_state[i].second, cpu_state[i].second, tolerance, std::string(what) + " " + cpu_state[i].first);
  }
}

TEST_P(CudaOps, Optimizers) {
  expect_optimizer_matches("adamw", dtype(), [](std::vector<ParamGroup> groups) {
    return make_adamw(std::move(groups), AdamWOptions{0.01, 0.9, 0.999, 1e-8});
  });
  expect_optimizer_matches("sgd", dtype(), [](std::vector<ParamGroup> groups) {
    return make_sgd(std::move(groups), SgdOptions{0.1, 0.0, false});
  });
  expect_optimizer_matches("sgd momentum", dtype(), [](std::vector<ParamGroup> groups) {
    return make_sgd(std::move(groups), SgdOptions{0.1, 0.9, false});
  });
  expect_optimizer_matches("sgd nesterov", dtype(), [](std::vector<ParamGroup> groups) {
    return make_sgd(std::move(groups), SgdOptions{0.1, 0.9, true});
  });
}

TEST_P(CudaOps, ClipGradNorm) {
  // Sizes above and below one block, and above the first pass's block count.
  std::vector<Tensor> cpu_params, gpu_params;
  for (int64_t n : {1, 300, 1000003}) {
    Tensor p = Tensor::zeros({n}, dtype()), g = uniform({n});
    cpu_params.push_back(p);
    cpu_params.back().set_grad(g);
    gpu_params.push_back(p.to(gpu()));
    gpu_params.back().set_grad(g.to(gpu()));
  }
  const double cpu_norm = clip_grad_norm(cpu_params, 1.0), gpu_norm = clip_grad_norm(gpu_params, 1.0);
  EXPECT_NEAR(gpu_norm, cpu_norm, 1e-12 * cpu_norm);  // both accumulate in double
  EXPECT_GT(cpu_norm, 1.0);                           // so the gradients were scaled
  for (size_t i = 0; i < cpu_params.size(); ++i) {
    expect_matches(gpu_params[i].grad(), cpu_params[i].grad(), tolerance(), "clipped grad " + std::to_string(i));
  }
}

INSTANTIATE_TEST_SUITE_P(CudaDtypes, CudaOps, ::testing::Values(DType::F32, DType::F64),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// ---------------------------------------------------------------- any dtype, layouts, edge cases

TEST(CudaCopy, ConversionsBetweenAllDtypesMatchTheCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  const std::vector<DType> dtypes = {DType::F32, DType::F64, DType::BF16, DType::F16,
                                     DType::I32, DType::I64, DType::U8};
  Rng rng(3);
  // Non-negative values below 200 convert without overflow to every dtype.
  Tensor values = Tensor::uniform({6, 7}, rng, 0.0, 200.0, DType::F64);
  for (DType from : dtypes) {
    Tensor source = values.to(from);
    for (DType to : dtypes) {
      const std::string what = fmt::format("{} -> {}", dtype_name(from), dtype_name(to));
      expect_matches(source.to(gpu()).to(to), source.to(to), 0.0, what);
      // Strided source: conversion and layout change in one kernel.
      expect_matches(transpose(source.to(gpu()), 0, 1).to(to), transpose(source, 0, 1).to(to), 0.0,
                     what + " transposed");
    }
  }
}

// Strided kernels divide positions by each dimension's size with a
// multiply-and-shift (FastDivider); dense copies go as vectors of 4 with a
// scalar tail, and only when both ends are aligned. Sizes here are primes,
// odd and large divisors, and a tensor starting one element into its storage.
TEST(CudaCopy, AwkwardSizesAndAlignmentsMatchTheCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  Rng rng(11);
  Tensor x = Tensor::uniform({7, 197, 13, 3}, rng, -1.0, 1.0, DType::F32);
  expect_matches(permute(x.to(gpu()), {3, 1, 0, 2}).contiguous(), permute(x, {3, 1, 0, 2}).contiguous(), 0.0,
                 "permute of prime sizes");
  expect_matches(transpose(x.to(gpu()), 1, 2).to(DType::BF16), transpose(x, 1, 2).to(DType::BF16), 0.0,
                 "transposed conversion to bfloat16");
  Tensor wide = Tensor::uniform({2, 65537}, rng, -1.0, 1.0, DType::F32);
  expect_matches(transpose(wide.to(gpu()), 0, 1).contiguous(), transpose(wide, 0, 1).contiguous(), 0.0,
                 "a divisor above 2^16");
  Tensor flat = Tensor::uniform({1003}, rng, -1.0, 1.0, DType::F32);
  for (int64_t start : {0, 1, 2}) {
    const std::string what = fmt::format("dense copy starting {} elements in", start);
    expect_matches(narrow(flat.to(gpu()), 0, start, 1001 - start).to(DType::BF16),
                   narrow(flat, 0, start, 1001 - start).to(DType::BF16), 0.0, what + " to bfloat16");
    expect_matches(narrow(flat.to(gpu()), 0, start, 1001 - start).to(DType::F64),
                   narrow(flat, 0, start, 1001 - start).to(DType::F64), 0.0, what + " to float64");
  }
}

// Slices whose rows are contiguous (a projection's columns, a gradient's
// window) copy in packs of 4 when the row length, the strides and both
// addresses allow it; otherwise element by element. Both against the CPU.
TEST(CudaCopy, SlicesWithContiguousRowsMatchTheCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  Rng rng(12);
  const Tensor x = Tensor::uniform({5, 7, 36}, rng, -1.0, 1.0, DType::F32), gx = x.to(gpu());
  struct Slice {
    int64_t start, length;
  };
  for (const Slice s : {Slice{8, 12}, Slice{0, 36}, Slice{2, 12}, Slice{8, 10}, Slice{32, 4}}) {
    const std::string what = fmt::format("columns [{}, {})", s.start, s.start + s.length);
    expect_matches(narrow(gx, 2, s.start, s.length).contiguous(), narrow(x, 2, s.start, s.length).contiguous(), 0.0,
                   what);
    expect_matches(narrow(permute(gx, {1, 0, 2}), 2, s.start, s.length).to(DType::BF16),
                   narrow(permute(x, {1, 0, 2}), 2, s.start, s.length).to(DType::BF16), 0.0,
                   what + " of a permutation, to bfloat16");
    expect_matches(narrow(gx, 2, s.start, s.length).to(DType::F64), narrow(x, 2, s.start, s.length).to(DType::F64), 0.0,
                   what + " to float64");
    const Tensor part = Tensor::uniform({5, 7, s.length}, rng, -1.0, 1.0, DType::F32);
    Tensor cpu_dst = Tensor::zeros({5, 7, 36}), gpu_dst = Tensor::zeros({5, 7, 36}, DType::F32, gpu());
    copy_into(narrow(cpu_dst, 2, s.start, s.length), part);
    copy_into(narrow(gpu_dst, 2, s.start, s.length), part.to(gpu()));
    expect_matches(gpu_dst, cpu_dst, 0.0, what + " as a destination");
  }
}

TEST(CudaCopy, FillAndCopyIntoAWindow) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  for (DType dtype : {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8}) {
    expect_matches(Tensor::full({3, 5}, 2.75, dtype, gpu()), Tensor::full({3, 5}, 2.75, dtype), 0.0,
                   std::string("full ") + dtype_name(dtype));
  }
  Rng rng(4);
  Tensor src = Tensor::randn({4, 2}, rng);
  Tensor cpu_dst = Tensor::zeros({4, 6}), gpu_dst = Tensor::zeros({4, 6}, DType::F32, gpu());
  copy_into(narrow(cpu_dst, 1, 3, 2), src);
  copy_into(narrow(gpu_dst, 1, 3, 2), src.to(gpu()));
  expect_matches(gpu_dst, cpu_dst, 0.0, "copy_into a narrow window");
}

TEST(CudaIndex, GatherAndSelectMoveAnyDtype) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  Tensor labels = Tensor::from_vector<int64_t>({7, -3, 12, 5, 0}, {5});
  Tensor order = Tensor::from_vector<int64_t>({4, 4, 1, 0, 2}, {5});
  expect_matches(index_select(labels.to(gpu()), 0, order.to(gpu())), index_select(labels, 0, order), 0.0,
                 "index_select of int64");
  Tensor halves = Tensor::from_vector<float>({1.5f, -2.25f, 3.0f}, {3}).to(DType::BF16);
  Tensor mask = Tensor::from_vector<uint8_t>({0, 1, 0}, {3});
  expect_matches(masked_fill(halves.to(gpu()), mask.to(gpu()), 9.0), masked_fill(halves, mask, 9.0), 0.0,
                 "masked_fill of bfloat16");
}

TEST(CudaLayout, HighRanksCollapseOrFailClearly) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  Rng rng(8);
  const Shape shape(10, 2);  // rank 10
  Tensor a = Tensor::randn(shape, rng), b = Tensor::randn(shape, rng);
  // Contiguous operands collapse to one dimension, whatever the rank.
  expect_matches(add(a.to(gpu()), b.to(gpu())), add(a, b), 0.0, "rank-10 add");
  // Reversing the dimensions leaves ten that cannot merge: more than the kernels take.
  std::vector<int64_t> reversed(10);
  for (int64_t d = 0; d < 10; ++d) reversed[d] = 9 - d;
  EXPECT_THROW(permute(a.to(gpu()), reversed).contiguous(), Error);
}

TEST(CudaEdge, EmptyInnerDimensionAndEmptyTensors) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  Tensor product = matmul(Tensor::zeros({3, 0}, DType::F32, gpu()), Tensor::zeros({0, 4}, DType::F32, gpu()));
  expect_matches(product, Tensor::zeros({3, 4}), 0.0, "matmul with k = 0");
  Tensor empty = Tensor::zeros({0, 5}, DType::F32, gpu());
  EXPECT_EQ(softmax(empty).shape(), (Shape{0, 5}));
  expect_matches(sum(empty, {0}), Tensor::zeros({5}), 0.0, "sum over an empty dim");
  EXPECT_EQ(add(empty, 1.0).numel(), 0);
}

// ---------------------------------------------------------------- the ViT fixture on the GPU

// The timm ViT-tiny fixture (PyTorch, float64) run on the GPU in float32, with
// the CPU test's tolerances (tests/test_vit.cpp).
TEST(CudaVit, TimmFixtureForwardAndGradients) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  auto model = load_vit(testing::shared_path("fixtures/timm_vit_tiny.safetensors"));
  model->to(gpu());
  SafetensorsFile io = SafetensorsFile::open(testing::shared_path("fixtures/timm_vit_tiny_io.safetensors"));
  for (auto& [name, p] : model->named_parameters()) {
    ASSERT_TRUE(p.device().is_cuda()) << name;
    p.set_requires_grad(true);
  }
  ForwardTrace trace;
  trace.want_probs = true;
  Tensor logits = model->forward(io.get("input").to(gpu()), {}, &trace);
  ASSERT_TRUE(logits.device().is_cuda());
  expect_matches(logits, io.get("logits"), 1e-5, "logits");
  for (size_t i = 0; i < trace.blocks.size(); ++i) {
    expect_matches(trace.blocks[i].output, io.get(fmt::format("blocks.{}.out", i)), 1e-5, "block out");
    expect_matches(trace.blocks[i].attn_probs, io.get(fmt::format("blocks.{}.attn_probs", i)), 1e-5, "probs");
  }
  Tensor loss = cross_entropy(logits, io.get("labels").to(gpu()));
  expect_matches(reshape(loss, {1}), io.get("loss"), 1e-5, "loss");
  loss.backward();
  int checked = 0;
  for (auto& [name, p] : model->named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_TRUE(p.grad().device().is_cuda()) << name;
    expect_matches(p.grad(), io.get("grad." + name), 1e-4, "grad " + name);
    ++checked;
  }
  EXPECT_EQ(checked, 4 + 12 * 3 + 2 + 2);  // cls, pos, patch w/b; 12 per block; norm; head

  // Untraced: Block::forward's own path (fused attention, the residual adds
  // inside the GEMMs, the stream's gradients summed by the norms).
  for (auto& [name, p] : model->named_parameters()) p.zero_grad();
  Tensor untraced = model->forward(io.get("input").to(gpu()));
  expect_matches(untraced, io.get("logits"), 1e-5, "untraced logits");
  cross_entropy(untraced, io.get("labels").to(gpu())).backward();
  for (auto& [name, p] : model->named_parameters()) {
    expect_matches(p.grad(), io.get("grad." + name), 1e-4, "untraced grad " + name);
  }
}

}  // namespace
}  // namespace engine

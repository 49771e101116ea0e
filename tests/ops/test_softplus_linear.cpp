// softplus_linear on the CPU: float64 gradients against central differences
// (contiguous, row-strided and non-uniform inputs), the values and gradients
// of linear + softplus (float64 and float32), strided rows read in place, the
// fallback past the kernels' K, the GEMM FLOP count and the argument errors.
#include <gtest/gtest.h>

#include "engine/ops/matmul/matmul.h"
#include "engine/ops/ops.h"
#include "engine/ops/softplus_linear/softplus_linear.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

using Inputs = std::vector<Tensor>;

Tensor reference(const Inputs& in) { return softplus(linear(in[0], in[1], in[2])); }
Tensor fused(const Inputs& in) { return softplus_linear(in[0], in[1], in[2]); }

// Leaves x [rows..., width], weight [n, k] and bias [n] (undefined without
// bias), in `dtype`; the bias spans softplus's regimes around Mamba's dt
// (pre about -7 to -2) up to past its threshold of 20.
Inputs leaves(const Shape& x_shape, int64_t n, int64_t k, bool with_bias, DType dtype, Rng& rng) {
  auto leaf = [&](const Shape& shape, double low, double high) {
    Tensor t = Tensor::uniform(shape, rng, low, high, dtype);
    t.set_requires_grad(true);
    return t;
  };
  return {leaf(x_shape, -1, 1), leaf({n, k}, -1, 1), with_bias ? leaf({n}, -8, 24) : Tensor()};
}

// softplus_linear(view(x), ...) against linear + softplus on the same view:
// the values and every input's gradient, to `tolerance`.
void expect_matches_reference(const std::function<Tensor(const Tensor&)>& view, const Inputs& in, double tolerance,
                              Rng& rng) {
  auto with_view = [&](Tensor (*op)(const Inputs&)) {
    return [&view, op](const Inputs& v) { return op({view(v[0]), v[1], v[2]}); };
  };
  const Tensor expected = with_view(reference)(in);
  expect_close(with_view(fused)(in), expected, tolerance);
  const Tensor weights = Tensor::uniform(expected.shape(), rng, 0.5, 1.5, expected.dtype());
  const Inputs want = gradients(with_view(reference), in, weights), got = gradients(with_view(fused), in, weights);
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i].defined()) expect_close(got[i], want[i], tolerance);
  }
}

Tensor same(const Tensor& x) { return x; }

TEST(SoftplusLinear, GradientsMatchCentralDifferences) {
  Rng rng(1);
  auto check = [](const std::function<Tensor(const Tensor&)>& view, Inputs in) {
    if (!in.back().defined()) in.pop_back();  // the check takes defined inputs only
    expect_gradients_match(
        [&](const Inputs& v) { return fused({view(v[0]), v[1], v.size() > 2 ? v[2] : Tensor()}); }, in);
  };
  // Contiguous x, with and without bias, and a single row.
  check(same, leaves({2, 3, 5}, 7, 5, true, DType::F64, rng));
  check(same, leaves({2, 3, 5}, 7, 5, false, DType::F64, rng));
  check(same, leaves({5}, 3, 5, true, DType::F64, rng));
  // Rows of 5 at a stride of 9 (a split of a wider last dim, read in place):
  // the gradient reaches the whole base through narrow.
  check([](const Tensor& base) { return narrow(base, -1, 2, 5); }, leaves({2, 4, 9}, 7, 5, true, DType::F64, rng));
  // Rows at no single stride (leading dims swapped; a transposed last dim):
  // read through a contiguous copy.
  check([](const Tensor& base) { return transpose(base, 0, 1); }, leaves({3, 2, 5}, 4, 5, true, DType::F64, rng));
  check([](const Tensor& base) { return transpose(base, 0, 1); }, leaves({5, 3}, 4, 5, true, DType::F64, rng));
}

TEST(SoftplusLinear, MatchesLinearThenSoftplus) {
  Rng rng(2);
  // Mamba's dt rows at dim 192 (K = 12 of x_proj's 44 outputs per token),
  // an odd N, no bias, and K at the kernels' limit.
  auto dt_rows = [](const Tensor& base) { return split(base, {12, 16, 16}, -1)[0]; };
  auto middle = [](const Tensor& base) { return narrow(base, -1, 3, 24); };
  for (DType dtype : {DType::F64, DType::F32}) {
    const double tolerance = dtype == DType::F64 ? 1e-12 : 1e-5;
    expect_matches_reference(dt_rows, leaves({2, 65, 44}, 192, 12, true, dtype, rng), tolerance, rng);
    expect_matches_reference(middle, leaves({3, 7, 30}, 37, 24, true, dtype, rng), tolerance, rng);
    expect_matches_reference(same, leaves({4, 9}, 37, 9, false, dtype, rng), tolerance, rng);
    expect_matches_reference(same, leaves({6, 64}, 5, 64, true, dtype, rng), tolerance, rng);
  }
}

TEST(SoftplusLinear, ReadsStridedRowsInPlace) {
  Rng rng(3);
  const Inputs in = leaves({2, 65, 44}, 192, 12, true, DType::F32, rng);
  const Tensor rows = narrow(in[0], -1, 0, 12);
  // The same rows as a contiguous tensor give the same bits.
  EXPECT_EQ(fused({rows, in[1], in[2]}).to_floats(), fused({rows.contiguous(), in[1], in[2]}).to_floats());
}

TEST(SoftplusLinear, FallsBackPastTheKernelsInputs) {
  Rng rng(4);
  const int64_t past = kSoftplusLinearMaxInputs + 1;
  expect_matches_reference(same, leaves({3, past}, 6, past, true, DType::F64, rng), 1e-12, rng);
  // Empty sizes: no rows, no inputs (softplus of the bias alone).
  const Inputs no_rows = leaves({0, 4}, 3, 4, true, DType::F32, rng);
  EXPECT_EQ(fused(no_rows).shape(), (Shape{0, 3}));
  const Inputs no_inputs = leaves({2, 0}, 3, 0, true, DType::F64, rng);
  expect_close(fused(no_inputs), reference(no_inputs), 1e-12);
}

TEST(SoftplusLinear, CountsTheGemmFlopsOfLinear) {
  Rng rng(5);
  const Inputs in = leaves({2, 5, 12}, 20, 12, true, DType::F32, rng);
  NoGradGuard no_grad;
  const int64_t before = gemm_flops_so_far();
  fused(in);
  EXPECT_EQ(gemm_flops_so_far() - before, 2 * 10 * 20 * 12);
}

TEST(SoftplusLinear, RejectsMismatchedArguments) {
  Rng rng(6);
  const Tensor x = Tensor::uniform({4, 5}, rng, -1, 1), w = Tensor::uniform({3, 5}, rng, -1, 1);
  expect_error_mentioning([&] { softplus_linear(x, reshape(w, {15}), Tensor()); }, {"softplus_linear", "weight"});
  expect_error_mentioning([&] { softplus_linear(x, Tensor::uniform({3, 4}, rng, -1, 1), Tensor()); },
                          {"softplus_linear", "[4, 5]", "[3, 4]"});
  expect_error_mentioning([&] { softplus_linear(x, w, Tensor::zeros({4})); }, {"softplus_linear", "bias"});
  expect_error_mentioning([&] { softplus_linear(x.to(DType::F64), w, Tensor()); }, {"softplus_linear", "float64"});
}

}  // namespace
}  // namespace engine

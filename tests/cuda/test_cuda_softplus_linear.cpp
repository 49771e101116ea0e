// softplus_linear on CUDA against the CPU kernels: the output and the
// gradients of x (through its view), weight and bias, float32 and float64, on
// contiguous, row-strided (Mamba's dt rows) and non-uniform inputs, over the
// kernel's input widths and vector widths (odd N, rows wider than a block,
// spare threads in the last tile); two GPU runs bit-identical; and the bf16
// GEMM mode. Every test skips itself on a machine without a GPU.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "engine/ops/ops.h"
#include "engine/ops/softplus_linear/softplus_linear.h"
#include "tests/cuda/cuda_expect.h"

namespace engine {
namespace {

using Inputs = std::vector<Tensor>;
using View = std::function<Tensor(const Tensor&)>;

// One case: x = view(base) with rows of K inputs, N outputs.
struct Case {
  std::string name;
  Shape base;
  View view;
  int64_t n, k;
  bool with_bias;
};

Tensor leaf(const Shape& shape, Rng& rng, double low, double high, DType dtype) {
  Tensor t = Tensor::uniform(shape, rng, low, high, dtype);
  t.set_requires_grad(true);
  return t;
}

// base, weight, bias (undefined without bias); the bias spans softplus's
// regimes, from Mamba's dt (pre about -7 to -2) to past its threshold of 20.
Inputs case_inputs(const Case& c, DType dtype, Rng& rng) {
  return {leaf(c.base, rng, -1, 1, dtype), leaf({c.n, c.k}, rng, -1, 1, dtype),
          c.with_bias ? leaf({c.n}, rng, -8, 24, dtype) : Tensor()};
}

Inputs on_gpu(const Inputs& cpu) {
  Inputs out;
  for (const Tensor& t : cpu) {
    Tensor g = t.defined() ? t.detach().to(Device::cuda()) : Tensor();
    if (g.defined()) g.set_requires_grad(true);
    out.push_back(g);
  }
  return out;
}

struct Result {
  Tensor out;
  Inputs grads;
};

// softplus_linear(view(base), weight, bias) and the gradients of
// sum(out * weights) with respect to base, weight and bias.
Result run(const View& view, const Inputs& in, const Tensor& weights) {
  for (const Tensor& t : in) {
    if (t.defined()) t.zero_grad();
  }
  Tensor out = softplus_linear(view(in[0]), in[1], in[2]);
  sum(mul(out, weights.to(out.device()))).backward();
  Result r{out.detach(), {}};
  for (const Tensor& t : in) r.grads.push_back(t.defined() ? t.grad() : Tensor());
  return r;
}

void expect_bit_identical(const Tensor& first, const Tensor& second, const std::string& what) {
  EXPECT_TRUE(first.to_doubles() == second.to_doubles()) << what << " differs between two identical CUDA runs";
}

// How a GPU result is held against the CPU's: (actual, expected, what).
using Compare = std::function<void(const Tensor&, const Tensor&, const std::string&)>;

Compare per_element(double tol) {
  return [tol](const Tensor& a, const Tensor& e, const std::string& what) { expect_all_close(a, e, tol, what); };
}

// The CPU kernels' result against the GPU's (twice) for one case: the output
// by `out`, the gradients by `grads`.
void compare_with_cpu(const Case& c, DType dtype, const Compare& out, const Compare& grads, Rng& rng) {
  const std::string label = c.name + (dtype == DType::F64 ? " float64" : " float32");
  SCOPED_TRACE(label);
  const Inputs cpu_in = case_inputs(c, dtype, rng);
  const Shape out_shape = [&] {
    Shape s = c.view(cpu_in[0].detach()).shape();
    s.back() = c.n;
    return s;
  }();
  const Tensor weights = Tensor::uniform(out_shape, rng, -1.5, 1.5, dtype);
  const Result cpu = run(c.view, cpu_in, weights);
  const Inputs gpu_in = on_gpu(cpu_in);
  const Result gpu = run(c.view, gpu_in, weights), again = run(c.view, gpu_in, weights);
  ASSERT_TRUE(gpu.out.device().is_cuda());
  out(gpu.out, cpu.out, label + " output");
  expect_bit_identical(gpu.out, again.out, label + " output");
  const char* names[] = {"x", "weight", "bias"};
  for (size_t i = 0; i < cpu_in.size(); ++i) {
    if (!cpu_in[i].defined()) continue;
    const std::string what = label + " gradient of " + names[i];
    grads(gpu.grads[i], cpu.grads[i], what);
    expect_bit_identical(gpu.grads[i], again.grads[i], what);
  }
}

Tensor same(const Tensor& x) { return x; }

std::vector<Case> cases() {
  auto dt_rows = [](int64_t k, int64_t state) {
    return [k, state](const Tensor& base) { return split(base, {k, state, state}, -1)[0]; };
  };
  return {
      // Mamba's dt at dim 192 (x_proj's rows of 12 + 2 x 16, N = d_inner):
      // float vectors of 4, double of 2.
      {"dt rows K=12 N=192", {2, 65, 44}, dt_rows(12, 16), 192, 12, true},
      {"dt rows K=12 N=384", {3, 65, 44}, dt_rows(12, 16), 384, 12, true},
      // Dim 384's K = 24 at an offset inside the row, odd N (vectors of 1).
      {"middle K=24 N=37", {3, 33, 30}, [](const Tensor& b) { return narrow(b, -1, 3, 24); }, 37, 24, true},
      // Dim 384's dt_proj (N = 768): float vectors of 2, 384 groups in two
      // tiles of 192 (double: vectors of 1 in three tiles).
      {"K=24 N=768", {5, 24}, same, 768, 24, true},
      // The widest K, no bias, odd N.
      {"K=64 N=37", {7, 64}, same, 37, 64, false},
      // K = 5 in the narrowest width, N = 2: many row slots, several chunks.
      {"K=5 N=2", {1100, 5}, same, 2, 5, true},
      // 1026 groups of 4: five tiles of 206 groups, 4 spare threads in the last.
      {"K=12 N=4104", {20, 12}, same, 4104, 12, true},
      // Rows at no single stride: read through a contiguous copy.
      {"transposed K=16 N=40", {3, 2, 16}, [](const Tensor& b) { return transpose(b, 0, 1); }, 40, 16, true},
      // A single row (1-D x).
      {"one row K=9 N=50", {9}, same, 50, 9, true},
  };
}

TEST(CudaSoftplusLinear, MatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  Rng rng(21);
  for (DType dtype : {DType::F32, DType::F64}) {
    const Compare close = per_element(dtype == DType::F64 ? 1e-10 : 1e-4);
    for (const Case& c : cases()) compare_with_cpu(c, dtype, close, close, rng);
  }
}

// In the bf16 GEMM mode the forward still computes in float32 (as close to
// the CPU as in float32 mode); the backward runs linear's bf16 GEMMs, whose
// operands are rounded to 8 significant bits: within 1e-2 of each gradient's
// largest value (measured on an H200: at most 3.1e-3).
TEST(CudaSoftplusLinear, Bf16ModeMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  const GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
  Rng rng(22);
  const Compare bf16_gemm = [](const Tensor& a, const Tensor& e, const std::string& what) {
    expect_matches(a, e, 1e-2, what);
  };
  for (const Case& c : cases()) compare_with_cpu(c, DType::F32, per_element(1e-4), bf16_gemm, rng);
}

}  // namespace
}  // namespace engine

// The fused linear ops on the GPU (cuBLASLt with the BIAS / BGRADB epilogues,
// the fused GELU-gradient pass) against the CPU reference: forward and the
// gradients dx, dW, db of a random-weighted sum, float32 and the bf16 GEMM
// mode, with cuBLASLt and with its cuBLAS fallback. Skipped without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "engine/caching_allocator.h"
#include "engine/ops/matmul/matmul_kernels.h"
#include "engine/ops/ops.h"
#include "engine/random.h"
#include "models/vit.h"
#include "tests/cuda/cuda_expect.h"

namespace engine {
namespace {

Device gpu() { return Device::cuda(); }

// Restores cuBLASLt (on) after a test that turns it off.
class CublasLtGuard {
 public:
  explicit CublasLtGuard(bool enabled) : previous_(cublaslt_enabled()) { set_cublaslt_enabled(enabled); }
  ~CublasLtGuard() { set_cublaslt_enabled(previous_); }

 private:
  bool previous_;
};

struct Results {
  Tensor out, dx, dw, db;
};

// f(x, w, b) and the gradients of sum(f * weights), on the device of the inputs.
Results run(bool gelu, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& weights) {
  Tensor xl = x.detach().clone(), wl = w.detach().clone(), bl = b.defined() ? b.detach().clone() : Tensor();
  xl.set_requires_grad(true);
  wl.set_requires_grad(true);
  if (bl.defined()) bl.set_requires_grad(true);
  Tensor out = gelu ? linear_gelu(xl, wl, bl) : linear(xl, wl, bl);
  sum(mul(out, weights)).backward();
  return {out.detach(), xl.grad(), wl.grad(), bl.defined() ? bl.grad() : Tensor()};
}

struct Tolerances {
  double out, dx, dw, db;
};

// Runs one configuration on both devices and compares everything.
void expect_gpu_matches_cpu(const std::string& what, bool gelu, const Shape& x_shape, int64_t out_features,
                            bool with_bias, DType dtype, const Tolerances& tolerance, uint64_t seed = 5) {
  Rng rng(seed);
  const int64_t in_features = x_shape.back();
  const Tensor x = Tensor::uniform(x_shape, rng, -1, 1, dtype);
  const Tensor w = Tensor::uniform({out_features, in_features}, rng, -0.5, 0.5, dtype);
  const Tensor b = with_bias ? Tensor::uniform({out_features}, rng, -1, 1, dtype) : Tensor();
  Shape out_shape(x_shape.begin(), x_shape.end() - 1);
  out_shape.push_back(out_features);
  const Tensor weights = Tensor::uniform(out_shape, rng, 0.5, 1.5, dtype);
  const Results expected = run(gelu, x, w, b, weights);
  const Results actual = run(gelu, x.to(gpu()), w.to(gpu()), with_bias ? b.to(gpu()) : Tensor(), weights.to(gpu()));
  ASSERT_TRUE(actual.out.device().is_cuda()) << what;
  expect_matches(actual.out, expected.out, tolerance.out, what + ": forward");
  expect_matches(actual.dx, expected.dx, tolerance.dx, what + ": dx");
  expect_matches(actual.dw, expected.dw, tolerance.dw, what + ": dW");
  if (with_bias) expect_matches(actual.db, expected.db, tolerance.db, what + ": db");
}

struct ShapeCase {
  Shape x;
  int64_t out;
};

const std::vector<ShapeCase>& shapes() {
  static const std::vector<ShapeCase> cases = {
      {{2, 65, 192}, 576},  // a ViT-S-like block at batch 2 (M = 130)
      {{3, 17, 40}, 24},    // odd sizes
      {{7, 33}, 5},         // a 2-D input, odd K and N: cuBLASLt may decline, the fallback must agree
  };
  return cases;
}

// Every shape, with and without bias, linear and linear_gelu.
void expect_all_match(const std::string& mode, DType dtype, const Tolerances& tolerance) {
  for (const ShapeCase& c : shapes()) {
    for (bool gelu : {false, true}) {
      for (bool with_bias : {true, false}) {
        const std::string what = fmt::format("{} {} {} x [{}, {}]{}", mode, gelu ? "linear_gelu" : "linear",
                                             shape_str(c.x), c.out, c.x.back(), with_bias ? " + bias" : "");
        expect_gpu_matches_cpu(what, gelu, c.x, c.out, with_bias, dtype, tolerance);
      }
    }
  }
}

class CudaLinear : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  }
};

// float32 is full float32 on both devices (no TF32): only summation order differs.
constexpr Tolerances kFloat32{1e-4, 1e-4, 1e-4, 1e-4};
// bf16 mode: operands rounded to 8 significant bits, float32 accumulation
// (see CudaGemmPrecision). d(bias) is summed from the float32 gradient, so it
// stays far more precise than the GEMM outputs; through linear_gelu it carries
// GELU's derivative taken at the bf16 GEMM's pre-activation (measured 5e-4
// relative on an H200).
constexpr Tolerances kBf16{2e-2, 2e-2, 2e-2, 2e-3};

TEST_F(CudaLinear, Float32MatchesCpu) {
  const GemmPrecisionGuard fp32(GemmPrecision::Float32);
  expect_all_match("fp32", DType::F32, kFloat32);
}

TEST_F(CudaLinear, Bf16MatchesCpu) {
  const GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
  expect_all_match("bf16", DType::F32, kBf16);
}

TEST_F(CudaLinear, CublasFallbackMatchesCpu) {
  const CublasLtGuard off(false);
  {
    const GemmPrecisionGuard fp32(GemmPrecision::Float32);
    expect_all_match("fp32 (cuBLAS)", DType::F32, kFloat32);
  }
  const GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
  expect_all_match("bf16 (cuBLAS)", DType::F32, kBf16);
}

// The largest |actual - expected| relative to max |expected|.
double relative_error(const Tensor& actual, const Tensor& expected) {
  const std::vector<double> a = actual.to_doubles(), e = expected.to_doubles();
  double scale = 1e-12, worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(e[i]));
    worst = std::max(worst, std::abs(a[i] - e[i]));
  }
  return worst / scale;
}

// bf16 mode's GEMMs read the forward's bfloat16 roundings of x and W, in the
// backward too: with operands and an upstream gradient exact in bfloat16 (so
// that g = dy needs no rounding), the bf16-mode gradients equal float32 ones
// of the explicitly rounded operands up to summation order (~1e-6), while
// operands read unrounded would be off by ~1e-3 (also checked, so that the
// test can fail).
TEST_F(CudaLinear, Bf16BackwardReadsTheForwardsRoundedOperands) {
  auto rounded = [](const Tensor& t) { return t.to(DType::BF16).to(DType::F32); };
  for (bool lt : {true, false}) {
    const CublasLtGuard path(lt);
    for (const ShapeCase& c : shapes()) {
      Rng rng(24);
      const int64_t in_features = c.x.back();
      Shape out_shape(c.x.begin(), c.x.end() - 1);
      out_shape.push_back(c.out);
      const Tensor x = Tensor::uniform(c.x, rng, -1, 1), w = Tensor::uniform({c.out, in_features}, rng, -0.5, 0.5);
      const Tensor b = Tensor::uniform({c.out}, rng, -1, 1);
      const Tensor weights = rounded(Tensor::uniform(out_shape, rng, 0.5, 1.5));
      const Results on_rounded = run(false, rounded(x), rounded(w), b, weights);  // CPU, float32
      const Results on_originals = run(false, x, w, b, weights);
      const GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
      const Results actual = run(false, x.to(gpu()), w.to(gpu()), b.to(gpu()), weights.to(gpu()));
      const std::string what = fmt::format("{} linear {} x [{}, {}]", lt ? "cuBLASLt" : "cuBLAS", shape_str(c.x),
                                           c.out, in_features);
      expect_matches(actual.out, on_rounded.out, 1e-5, what + ": forward");
      expect_matches(actual.dx, on_rounded.dx, 1e-5, what + ": dx");
      expect_matches(actual.dw, on_rounded.dw, 1e-5, what + ": dW");
      expect_matches(actual.db, on_rounded.db, 1e-5, what + ": db");
      EXPECT_GT(relative_error(actual.dx, on_originals.dx), 1e-4) << what << ": dx does not see the rounding";
      EXPECT_GT(relative_error(actual.dw, on_originals.dw), 1e-4) << what << ": dW does not see the rounding";
    }
  }
}

TEST_F(CudaLinear, Float64MatchesCpu) {
  const Tolerances tight{1e-12, 1e-12, 1e-12, 1e-12};
  expect_gpu_matches_cpu("fp64 linear", false, {3, 17, 40}, 24, true, DType::F64, tight);
  expect_gpu_matches_cpu("fp64 linear_gelu", true, {3, 17, 40}, 24, true, DType::F64, tight);
}

// The fused paths really run: the ViT-S-like shape takes cuBLASLt's BIAS
// epilogue in both precisions, and a repeated step makes no new heuristic
// query and no cudaMalloc.
TEST_F(CudaLinear, TakesTheCublasLtBiasEpilogueAndCachesPlans) {
  Rng rng(21);
  const Tensor x = Tensor::uniform({2, 65, 192}, rng, -1, 1).to(gpu());
  Tensor w = Tensor::uniform({576, 192}, rng, -0.5, 0.5).to(gpu()), b = Tensor::uniform({576}, rng, -1, 1).to(gpu());
  Tensor w2 = Tensor::uniform({192, 576}, rng, -0.5, 0.5).to(gpu()), b2 = Tensor::uniform({192}, rng, -1, 1).to(gpu());
  for (Tensor* p : {&w, &b, &w2, &b2}) p->set_requires_grad(true);
  LinearPathCounters& counters = linear_path_counters();
  for (GemmPrecision precision : {GemmPrecision::Float32, GemmPrecision::BFloat16}) {
    const GemmPrecisionGuard guard(precision);
    const std::string mode = precision == GemmPrecision::BFloat16 ? "bf16" : "fp32";
    auto step = [&] {  // an MLP block's GEMMs: fc1 + GELU, fc2
      for (Tensor* p : {&w, &b, &w2, &b2}) p->zero_grad();
      sum(linear(linear_gelu(x, w, b), w2, b2)).backward();
    };
    const int64_t bias_before = counters.lt_bias.load();
    step();
    EXPECT_GE(counters.lt_bias.load() - bias_before, 1) << mode << ": no cuBLASLt BIAS epilogue ran";
    device_synchronize(gpu());
    const int64_t plans = counters.lt_plans.load(), matmuls = counters.lt_matmuls.load();
    const size_t mallocs = device_allocator_stats(gpu()).system_allocations;
    step();
    device_synchronize(gpu());
    EXPECT_EQ(counters.lt_plans.load(), plans) << mode << ": a steady-state step queried the heuristic";
    EXPECT_GT(counters.lt_matmuls.load(), matmuls) << mode;
    EXPECT_EQ(device_allocator_stats(gpu()).system_allocations, mallocs) << mode << ": cudaMalloc in a steady state";
    std::printf("[ info ] %s: %lld cuBLASLt matmuls, %lld BIAS, %lld BGRADB, %lld plans, %lld rejected so far\n",
                mode.c_str(), static_cast<long long>(counters.lt_matmuls.load()),
                static_cast<long long>(counters.lt_bias.load()), static_cast<long long>(counters.lt_bias_grad.load()),
                static_cast<long long>(counters.lt_plans.load()), static_cast<long long>(counters.lt_rejected.load()));
  }
}

// The same inputs give the same bits, backward included (the column sums
// run in a fixed order; cuBLASLt's algorithm is fixed by the cached plan).
TEST_F(CudaLinear, Deterministic) {
  Rng rng(22);
  const Tensor x = Tensor::uniform({4, 197, 64}, rng, -1, 1).to(gpu());
  const Tensor w = Tensor::uniform({256, 64}, rng, -0.5, 0.5).to(gpu()), b = Tensor::uniform({256}, rng, -1, 1).to(gpu());
  const Tensor weights = Tensor::uniform({4, 197, 256}, rng, 0.5, 1.5).to(gpu());
  for (GemmPrecision precision : {GemmPrecision::Float32, GemmPrecision::BFloat16}) {
    const GemmPrecisionGuard guard(precision);
    for (bool gelu : {false, true}) {
      const Results first = run(gelu, x, w, b, weights), second = run(gelu, x, w, b, weights);
      EXPECT_EQ(first.out.to_floats(), second.out.to_floats());
      EXPECT_EQ(first.dx.to_floats(), second.dx.to_floats());
      EXPECT_EQ(first.dw.to_floats(), second.dw.to_floats());
      EXPECT_EQ(first.db.to_floats(), second.db.to_floats());
    }
  }
}

// fused_mlp on the GPU gives the bits of linear(linear_gelu(...)) on the GPU
// in both precisions (in bf16 mode its GELU writes the bfloat16 operand that
// fc2's kernel would have rounded; a hidden size that leaves a tail of 2 for
// the 4-wide conversion), and with cuBLASLt off (float32 hidden activation).
TEST_F(CudaLinear, FusedMlpMatchesTheTwoOpsBitForBit) {
  Rng rng(24);
  const Tensor x = Tensor::uniform({3, 17, 64}, rng, -1, 1).to(gpu());
  const Tensor w1 = Tensor::uniform({250, 64}, rng, -0.5, 0.5).to(gpu());
  const Tensor b1 = Tensor::uniform({250}, rng, -1, 1).to(gpu());
  const Tensor w2 = Tensor::uniform({48, 250}, rng, -0.3, 0.3).to(gpu());
  const Tensor b2 = Tensor::uniform({48}, rng, -1, 1).to(gpu());
  auto run_mlp = [&](bool fused) {
    std::vector<Tensor> leaves;
    for (const Tensor& t : {x, w1, b1, w2, b2}) leaves.push_back(t.clone().set_requires_grad(true));
    Tensor out = fused ? fused_mlp(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4])
                       : linear(linear_gelu(leaves[0], leaves[1], leaves[2]), leaves[3], leaves[4]);
    sum(mul(out, out)).backward();
    std::vector<std::vector<float>> results{out.to_floats()};
    for (const Tensor& leaf : leaves) results.push_back(leaf.grad().to_floats());
    return results;
  };
  for (bool lt : {true, false}) {
    const CublasLtGuard cublaslt(lt);
    for (GemmPrecision precision : {GemmPrecision::Float32, GemmPrecision::BFloat16}) {
      const GemmPrecisionGuard guard(precision);
      const auto fused = run_mlp(true), two_ops = run_mlp(false);
      for (size_t i = 0; i < fused.size(); ++i) {
        EXPECT_EQ(fused[i], two_ops[i]) << "result " << i << (lt ? " cuBLASLt" : " cuBLAS")
                                        << (precision == GemmPrecision::BFloat16 ? " bf16" : " fp32");
      }
    }
  }
}

// A residual added by the GEMM (cuBLASLt's C matrix, or a copy and an
// accumulating cuBLAS GEMM) gives what linear + add give, up to the order of
// the bias and residual additions, and passes the gradient through to the
// residual: in both precisions, with a residual at an odd address (a row
// slice of 5 floats), and through fused_mlp's fc2.
TEST_F(CudaLinear, ResidualIsAddedByTheGemm) {
  Rng rng(25);
  const Tensor x = Tensor::uniform({3, 17, 40}, rng, -1, 1).to(gpu());
  const Tensor w = Tensor::uniform({5, 40}, rng, -0.5, 0.5).to(gpu()), b = Tensor::uniform({5}, rng, -1, 1).to(gpu());
  const Tensor w2 = Tensor::uniform({5, 24}, rng, -0.5, 0.5).to(gpu());
  const Tensor w1 = Tensor::uniform({24, 40}, rng, -0.5, 0.5).to(gpu());
  const Tensor b1 = Tensor::uniform({24}, rng, -1, 1).to(gpu());
  // The residual: rows 1.. of a [52, 5] leaf, contiguous, 20 bytes into its storage.
  const Tensor padded = Tensor::uniform({52, 5}, rng, -1, 1).to(gpu());
  auto rows_from_1 = [](const Tensor& t) { return reshape(narrow(t, 0, 1, 51), {3, 17, 5}); };
  const Tensor weights = Tensor::uniform({3, 17, 5}, rng, 0.5, 1.5).to(gpu());
  using Fn = std::function<Tensor(const std::vector<Tensor>&, bool)>;
  const Fn linear_op = [](const std::vector<Tensor>& in, bool fused) {
    return fused ? linear(in[0], in[1], in[2], in[3]) : add(linear(in[0], in[1], in[2]), in[3]);
  };
  const Fn mlp_op = [&](const std::vector<Tensor>& in, bool fused) {
    return fused ? fused_mlp(in[0], w1, b1, in[1], in[2], in[3]) : add(fused_mlp(in[0], w1, b1, in[1], in[2]), in[3]);
  };
  for (bool lt : {true, false}) {
    const CublasLtGuard cublaslt(lt);
    for (GemmPrecision precision : {GemmPrecision::Float32, GemmPrecision::BFloat16}) {
      const GemmPrecisionGuard guard(precision);
      for (const auto& [name, op, weight] : {std::tuple{"linear", linear_op, w}, std::tuple{"fused_mlp", mlp_op, w2}}) {
        const std::string what = fmt::format("{}{}{}", name, lt ? " cuBLASLt" : " cuBLAS",
                                             precision == GemmPrecision::BFloat16 ? " bf16" : " fp32");
        std::vector<std::vector<Tensor>> results;
        for (bool fused : {true, false}) {
          std::vector<Tensor> leaves;
          for (const Tensor& t : {x, weight, b}) leaves.push_back(t.clone().set_requires_grad(true));
          const Tensor padded_leaf = padded.clone().set_requires_grad(true);
          leaves.push_back(rows_from_1(padded_leaf));
          Tensor out = op(leaves, fused);
          sum(mul(out, weights)).backward();
          results.push_back({out.detach(), leaves[0].grad(), leaves[1].grad(), leaves[2].grad(),
                             rows_from_1(padded_leaf.grad())});
        }
        for (size_t i = 0; i < results[0].size(); ++i) {
          expect_matches(results[0][i], results[1][i], 1e-5, what + " result " + std::to_string(i));
        }
        expect_matches(results[0][4], weights, 0.0, what + ": the residual's gradient");
      }
    }
  }
}

// A bfloat16 x with float32 weights in float32 mode: the kernels widen it
// back exactly (cuBLASLt and cuBLAS paths), so the result is the float32
// linear of the rounded values.
TEST_F(CudaLinear, Bf16OperandInFloat32Mode) {
  Rng rng(27);
  const Tensor x = Tensor::uniform({7, 33, 64}, rng, -1, 1), w = Tensor::uniform({48, 64}, rng, -0.5, 0.5);
  const Tensor b = Tensor::uniform({48}, rng, -1, 1);
  const Tensor expected = linear(x.to(DType::BF16).to(DType::F32), w, b);
  const GemmPrecisionGuard fp32(GemmPrecision::Float32);
  for (bool lt : {true, false}) {
    const CublasLtGuard cublaslt(lt);
    const Tensor actual = linear(x.to(gpu()).to(DType::BF16), w.to(gpu()), b.to(gpu()));
    expect_matches(actual, expected, 1e-4, lt ? "bf16 x, float32 mode, cuBLASLt" : "bf16 x, float32 mode, cuBLAS");
  }
}

// A layer norm that writes bfloat16 writes the rounding of its float32
// output (register-row kernel: 192 columns; generic kernel: 1028), and a
// linear fed with it gives the bits (output and every gradient) of the same
// linear converting the float32 output itself.
TEST_F(CudaLinear, LayerNormWritesTheLinearsBf16Operand) {
  Rng rng(25);
  const GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
  for (int64_t dim : {192, 1028}) {
    const Tensor x = Tensor::uniform({5, 33, dim}, rng, -2, 2).to(gpu());
    const Tensor g = Tensor::uniform({dim}, rng, 0.5, 1.5).to(gpu()), b = Tensor::uniform({dim}, rng, -1, 1).to(gpu());
    const Tensor w = Tensor::uniform({64, dim}, rng, -0.2, 0.2).to(gpu());
    ASSERT_EQ(linear_operand_dtype(x), DType::BF16);
    EXPECT_EQ(layer_norm(x, g, b, 1e-6, DType::BF16).to_floats(),
              layer_norm(x, g, b, 1e-6).to(DType::BF16).to_floats())
        << dim;
    auto run_ln_linear = [&](bool operand) {
      std::vector<Tensor> leaves;
      for (const Tensor& t : {x, g, b, w}) leaves.push_back(t.clone().set_requires_grad(true));
      const DType out = operand ? DType::BF16 : DType::F32;
      Tensor y = linear(layer_norm(leaves[0], leaves[1], leaves[2], 1e-6, out), leaves[3]);
      sum(mul(y, y)).backward();
      std::vector<std::vector<float>> results{y.to_floats()};
      for (const Tensor& leaf : leaves) results.push_back(leaf.grad().to_floats());
      return results;
    };
    const auto operand = run_ln_linear(true), converted = run_ln_linear(false);
    for (size_t i = 0; i < operand.size(); ++i) EXPECT_EQ(operand[i], converted[i]) << dim << " result " << i;
  }
}

// A ViT without a trace hands LN1 and LN2 outputs to the linears as bf16
// operands (LN1's only to a mixer whose input feeds linears alone: attention,
// gated_rnn, mamba, mlp), adds both residuals inside the GEMMs and sums the
// stream's gradients in the norms' backward; with a trace LN1's output stays
// float32 (the trace keeps it) and the mixer's residual is a separate add.
// The same logits and parameter gradients either way, up to the order of
// those float32 additions (biases made non-zero, so that the order matters);
// for the ViT and for a hybrid with the mixers that have parameters.
TEST_F(CudaLinear, VitWithAndWithoutTraceAgreeInBf16Mode) {
  const GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
  VitConfig hybrid = vit_preset("vit_cifar_tiny_patch4_32");
  hybrid.mixers.assign(hybrid.depth, "attention");
  const std::vector<std::string> kinds = {"gated_rnn", "mamba", "mlp", "conv"};
  for (size_t i = 0; i < kinds.size(); ++i) hybrid.mixers[2 + 2 * i] = kinds[i];
  for (const VitConfig& config : {vit_preset("vit_cifar_tiny_patch4_32"), hybrid}) {
    VisionTransformer model(config, 3);
    Rng rng(26);
    for (auto& [name, p] : model.named_parameters()) {
      if (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0) {
        copy_into(p, Tensor::uniform(p.shape(), rng, -0.1, 0.1));
      }
    }
    model.to(gpu());
    const Tensor images = Tensor::uniform({4, 3, 32, 32}, rng, -1, 1).to(gpu());
    auto run_vit = [&](bool traced) {
      for (auto& [name, p] : model.named_parameters()) {
        p.set_requires_grad(true);
        p.zero_grad();
      }
      ForwardTrace trace;
      Tensor logits = model.forward(images, {}, traced ? &trace : nullptr);
      sum(mul(logits, logits)).backward();
      std::vector<Tensor> results{logits.detach()};
      for (auto& [name, p] : model.named_parameters()) results.push_back(p.grad());
      return results;
    };
    const auto plain = run_vit(false), traced = run_vit(true);
    ASSERT_EQ(plain.size(), traced.size());
    // A float32 rounding difference can flip a later bfloat16 rounding: bf16's tolerance.
    const std::string label = config.mixers.empty() ? "ViT" : "hybrid";
    for (size_t i = 0; i < plain.size(); ++i) {
      expect_matches(plain[i], traced[i], 2e-2, label + " result " + std::to_string(i));
    }
  }
}

// Operands that start inside their storage, so at addresses aligned to only
// 4 bytes: the plans must ask cuBLASLt for algorithms that accept them (and
// the unaligned bias is added by its own kernel).
TEST_F(CudaLinear, UnalignedOperands) {
  Rng rng(23);
  const int64_t m = 50, k = 64, n = 96;
  const Tensor flat = Tensor::uniform({1 + m * k + 1 + n * k + 1 + n}, rng, -1, 1);
  const Tensor x = reshape(narrow(flat, 0, 1, m * k), {m, k});
  const Tensor w = reshape(narrow(flat, 0, 2 + m * k, n * k), {n, k});
  const Tensor b = narrow(flat, 0, 3 + m * k + n * k, n);
  const Tensor flat_gpu = flat.to(gpu());
  const Tensor xg = reshape(narrow(flat_gpu, 0, 1, m * k), {m, k});
  const Tensor wg = reshape(narrow(flat_gpu, 0, 2 + m * k, n * k), {n, k});
  const Tensor bg = narrow(flat_gpu, 0, 3 + m * k + n * k, n);
  for (GemmPrecision precision : {GemmPrecision::Float32, GemmPrecision::BFloat16}) {
    const GemmPrecisionGuard guard(precision);
    const double tolerance = precision == GemmPrecision::BFloat16 ? 2e-2 : 1e-4;
    expect_matches(linear(xg, wg, bg), linear(x, w, b), tolerance, "linear, unaligned");
    expect_matches(linear_gelu(xg, wg, bg), linear_gelu(x, w, b), tolerance, "linear_gelu, unaligned");
  }
}

// The finding behind linear_gelu's design (engine/ops/matmul/linear.cu):
// cuBLASLt's GELU epilogue is the tanh approximation, not the exact erf GELU
// of the models, so it cannot replace our GELU kernel without changing them.
TEST_F(CudaLinear, CublasLtGeluEpilogueIsTheTanhApproximation) {
  ASSERT_NE(cublaslt_gelu_epilogue_probe, nullptr);
  std::vector<float> xs(512);
  for (size_t i = 0; i < xs.size(); ++i) xs[i] = -4.0f + static_cast<float>(i) / 64.0f;  // exact in bfloat16
  const Tensor y = cublaslt_gelu_epilogue_probe(Tensor::from_vector(xs, {512}).to(gpu()));
  if (!y.defined()) GTEST_SKIP() << "cuBLASLt offers no algorithm for the GELU epilogue here";
  const std::vector<float> got = y.to_floats();
  // Which formula is the epilogue? With d = erf GELU - tanh GELU (a smooth
  // bump, up to 4.7e-4 near |x| = 2.7) and r = epilogue - tanh GELU, the
  // least-squares c in r ~ c d is 0 for the tanh form and 1 for the exact one,
  // whatever rounding noise (a hardware tanh, say) comes on top.
  double dd = 0, dr = 0, from_tanh = 0, from_erf = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const double x = xs[i];
    const double exact = 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    const double tanh_form = 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
    const double d = exact - tanh_form, r = got[i] - tanh_form;
    dd += d * d;
    dr += d * r;
    from_tanh = std::max(from_tanh, std::abs(r));
    from_erf = std::max(from_erf, std::abs(got[i] - exact));
  }
  const double c = dr / dd;
  std::printf("[ info ] cuBLASLt GELU epilogue on [-4, 4): max |epilogue - tanh GELU| %.3g, "
              "max |epilogue - erf GELU| %.3g, fit epilogue = tanh + %.3f (erf - tanh)\n",
              from_tanh, from_erf, c);
  EXPECT_LT(c, 0.5) << "the epilogue is closer to the exact GELU: linear_gelu could use GELU_AUX_BIAS";
}

}  // namespace
}  // namespace engine

// fused_attention on CUDA against the CPU kernel: forward output and the
// gradients of q, k and v (backward of a random weighted sum on each device)
// for N in {1, 17, 65, 197} and head_dim 32 and 64, with and without a key
// mask, bit-identical results when the same CUDA call runs twice, rows whose
// keys are all dropped, many (batch x head) pairs, the Attention layer on the
// GPU, and the errors for what the CUDA kernels do not support; the packed op
// (qkv [B, N, 3D] in, token-major context out, d(qkv) back) the same way, and
// its fallback for a qkv whose rows are not 16-byte aligned. The
// CudaAttentionBf16 suite runs the same comparisons in bf16 mode (the
// tensor-core kernels of attention_mma.cu) on bf16-exact inputs.
// Every test skips itself on a machine without a GPU (`make test-gpu` runs them).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "engine/ops/attention/attention.h"
#include "engine/ops/matmul/matmul.h"
#include "engine/ops/ops.h"
#include "layers/attention.h"
#include "tests/cuda/cuda_expect.h"
#include "tests/expect_error.h"

namespace engine {
namespace {

// expect_all_close's per-element tolerance for float32 (tests/cuda/cuda_expect.h).
constexpr double kTol = 1e-4;
// bf16 mode on inputs (q, k, v and the loss weights, i.e. dout) that are
// exactly bf16: only the rounding of P and dS to bf16 before their second
// products remains, a relative u = 2^-9 per term. The output's error is at
// most u sum_j P_ij |v_j| <= u max|v| (|v| <= ~4 here); the gradients sum
// terms as large as |dS| |k| (dS = P (dP - delta) reaches ~10 with
// |dP| = |dout . v| ~ 7 sigma over d = 64): several u of expect_all_close's
// scale. There is one more term: delta_i = dout_i . out_i is taken from the
// forward's output, which was made from the rounded P, while dS uses the
// unrounded one, so sum_j dS_ij is off by up to u |dout_i| |v| (FlashAttention
// has the same term). The host emulation (tools_dev/attention_emu, same
// inputs) measures at most 2.3e-3 (output) and 7.9e-3 (gradients) over its
// cases; on the H200 the 20-million-element d(qkv) of 7000 x 10 heads at
// N = 3 with a key mask (rows of two or three large-norm keys) had 2
// elements at 2.4e-2 of the scale. A fragment or indexing error gives O(1).
constexpr double kTolBf16 = 1e-2;      // output
constexpr double kTolBf16Grad = 4e-2;  // dq, dk, dv, d(qkv)

// The values of t rounded to bf16 (still float32): what the tensor-core
// kernels read them as, so the CPU reference sees the same inputs.
Tensor round_bf16(const Tensor& t) { return t.to(DType::BF16).to(DType::F32); }

Tensor leaf_on(const Tensor& cpu, Device device) {
  Tensor t = cpu.detach().to(device);
  t.set_requires_grad(true);
  return t;
}

// A [B, N] 0/1 float32 mask dropping about a third of the keys (never key 0).
Tensor random_mask(int64_t batch, int64_t tokens, Rng& rng) {
  std::vector<float> values(batch * tokens);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t j = 0; j < tokens; ++j) values[b * tokens + j] = j == 0 || rng.uniform() > 0.35 ? 1.0f : 0.0f;
  }
  return Tensor::from_vector<float>(values, {batch, tokens});
}

struct Result {
  Tensor out, dq, dk, dv;
};

// fused_attention and the gradients of sum(out * weights) on `device`.
Result run_on(Device device, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, double scale,
              const Tensor& weights) {
  Tensor qd = leaf_on(q, device), kd = leaf_on(k, device), vd = leaf_on(v, device);
  Tensor out = fused_attention(qd, kd, vd, scale, mask.defined() ? mask.to(device) : Tensor());
  sum(mul(out, weights.to(device))).backward();
  return {out.detach(), qd.grad(), kd.grad(), vd.grad()};
}

// bf16: inputs rounded to bf16 and the tolerance kTolBf16 (the caller sets
// bf16 mode); otherwise float32 as given, kTol.
void compare_with_cpu(const Shape& shape, bool masked, Rng& rng, bool bf16 = false) {
  const std::string label = "q, k, v " + shape_str(shape) + (masked ? " with a key mask" : "") + (bf16 ? " bf16" : "");
  SCOPED_TRACE(label);
  const double kTol = bf16 ? kTolBf16 : ::engine::kTol, kGradTol = bf16 ? kTolBf16Grad : ::engine::kTol;
  auto maybe_round = [&](const Tensor& t) { return bf16 ? round_bf16(t) : t; };
  const double scale = 1.0 / std::sqrt(static_cast<double>(shape[3]));
  Tensor q = maybe_round(Tensor::randn(shape, rng, DType::F32, 1.5));
  Tensor k = maybe_round(Tensor::randn(shape, rng, DType::F32, 1.5));
  Tensor v = maybe_round(Tensor::randn(shape, rng, DType::F32));
  Tensor mask = masked ? random_mask(shape[0], shape[2], rng) : Tensor();
  Tensor weights = maybe_round(Tensor::uniform(shape, rng, -1.5, 1.5));
  const Result cpu = run_on(Device::cpu(), q, k, v, mask, scale, weights);
  const Result gpu = run_on(Device::cuda(), q, k, v, mask, scale, weights);
  const Result again = run_on(Device::cuda(), q, k, v, mask, scale, weights);
  expect_all_close(gpu.out, cpu.out, kTol, label + " output");
  expect_all_close(gpu.dq, cpu.dq, kGradTol, label + " dq");
  expect_all_close(gpu.dk, cpu.dk, kGradTol, label + " dk");
  expect_all_close(gpu.dv, cpu.dv, kGradTol, label + " dv");
  for (auto [first, second, what] : {std::tuple{gpu.out, again.out, "output"}, std::tuple{gpu.dq, again.dq, "dq"},
                                     std::tuple{gpu.dk, again.dk, "dk"}, std::tuple{gpu.dv, again.dv, "dv"}}) {
    EXPECT_TRUE(first.to_doubles() == second.to_doubles()) << label << " " << what << " differs between two runs";
  }
}

TEST(CudaAttention, MatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  Rng rng(31);
  // N = 1; 17 (one partial tile of 16 < keys <= 32); 65 (the CIFAR ViT: a
  // full tile and one key); 197 (ViT-S/16: three full tiles and 5 keys);
  // batch x heads = 6.
  for (int64_t n : {1, 17, 65, 197}) {
    for (int64_t d : {32, 64}) {
      for (bool masked : {false, true}) compare_with_cpu({2, 3, n, d}, masked, rng);
    }
  }
}

TEST(CudaAttention, ManyHeadsAndLongerSequences) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  Rng rng(32);
  // 70,000 (batch x head) pairs: more than one grid row of blocks (65,535).
  compare_with_cpu({7000, 10, 3, 32}, true, rng);
  // Exactly two tiles; partial last tiles of 11 (8 < keys <= 16) and 44
  // (more than 32) keys, which take other variants of the score products.
  compare_with_cpu({1, 2, 128, 64}, true, rng);
  compare_with_cpu({1, 2, 75, 64}, true, rng);
  compare_with_cpu({2, 1, 300, 32}, false, rng);
}

TEST(CudaAttention, RowsWithoutActiveKeysGiveZeros) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  Rng rng(33);
  const Shape shape = {2, 2, 65, 64};
  Tensor q = Tensor::randn(shape, rng), k = Tensor::randn(shape, rng), v = Tensor::randn(shape, rng);
  Tensor mask = random_mask(2, 65, rng);
  std::vector<float> values = mask.to_floats();
  std::fill(values.begin() + 65, values.end(), 0.0f);  // batch 1: no key at all
  mask = Tensor::from_vector<float>(values, {2, 65});
  Tensor weights = Tensor::uniform(shape, rng, -1.0, 1.0);
  const Result cpu = run_on(Device::cpu(), q, k, v, mask, 0.125, weights);
  const Result gpu = run_on(Device::cuda(), q, k, v, mask, 0.125, weights);
  expect_all_close(gpu.out, cpu.out, kTol, "output");
  expect_all_close(gpu.dq, cpu.dq, kTol, "dq");
  expect_all_close(gpu.dk, cpu.dk, kTol, "dk");
  expect_all_close(gpu.dv, cpu.dv, kTol, "dv");
  std::vector<double> out = gpu.out.to_doubles();
  for (size_t i = out.size() / 2; i < out.size(); ++i) ASSERT_EQ(out[i], 0.0) << i;
}

TEST(CudaAttention, NonContiguousInputs) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  Rng rng(34);
  // q, k, v as [B, N, H, d] transposed to [B, H, N, d], and q at an offset
  // that is not 16-byte aligned (a narrow() of the head dimension's storage).
  Tensor x = Tensor::randn({2, 65, 3, 64}, rng), y = Tensor::randn({2, 65, 3, 64}, rng);
  Tensor z = Tensor::randn({2 * 65 * 3 * 64 + 1}, rng);
  Tensor odd = reshape(narrow(z, 0, 1, 2 * 65 * 3 * 64), {2, 3, 65, 64});
  Tensor cpu = fused_attention(transpose(x, 1, 2), transpose(y, 1, 2), odd, 0.125);
  Tensor gpu = fused_attention(transpose(x.to(Device::cuda()), 1, 2), transpose(y.to(Device::cuda()), 1, 2),
                               odd.to(Device::cuda()), 0.125);
  expect_all_close(gpu, cpu, kTol, "output");
  Tensor gpu_odd = reshape(narrow(z.to(Device::cuda()), 0, 1, 2 * 65 * 3 * 64), {2, 3, 65, 64});
  expect_all_close(fused_attention(gpu_odd, gpu_odd, gpu_odd, 0.125), fused_attention(odd, odd, odd, 0.125), kTol,
                   "misaligned output");
}

TEST(CudaAttention, LayerMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  // The Attention layer (ViT-S's 6 heads of 64) on both devices, the GPU
  // through the fused op, with the A-ViT key mask: only the GEMMs differ
  // (cuBLAS against OpenBLAS, both in full float32), so rounding only, to a
  // looser tolerance since it passes through two GEMMs of depth 384.
  Rng init(35);
  Attention cpu(384, 6, true, init);
  Rng init_again(35);
  Attention gpu(384, 6, true, init_again);
  move_parameters([&](const ParamVisitor& fn) { gpu.visit("", fn); }, Device::cuda());
  Rng rng(36);
  Tensor x = Tensor::randn({2, 197, 384}, rng);
  ForwardContext ctx_cpu, ctx_gpu;
  ctx_cpu.active = random_mask(2, 197, rng);
  ctx_gpu.active = ctx_cpu.active.to(Device::cuda());
  NoGradGuard no_grad;
  Tensor expected = cpu.forward(x, ctx_cpu, nullptr);
  Tensor actual = gpu.forward(x.to(Device::cuda()), ctx_gpu, nullptr);
  Tensor probs;
  Tensor materialised = gpu.forward(x.to(Device::cuda()), ctx_gpu, &probs);
  expect_all_close(actual, expected, 1e-3, "fused layer output");
  expect_all_close(actual, materialised, kTol, "fused vs materialised on cuda");
}

// fused_attention_packed and d(qkv) of sum(out * weights) on `device`.
struct PackedResult {
  Tensor out, dqkv;
};
PackedResult run_packed_on(Device device, const Tensor& qkv, int64_t heads, const Tensor& mask, double scale,
                           const Tensor& weights) {
  Tensor x = leaf_on(qkv, device);
  Tensor out = fused_attention_packed(x, heads, scale, mask.defined() ? mask.to(device) : Tensor());
  sum(mul(out, weights.to(device))).backward();
  return {out.detach(), x.grad()};
}

void compare_packed_with_cpu(int64_t batch, int64_t tokens, int64_t heads, int64_t d, bool masked, Rng& rng,
                             bool bf16 = false) {
  const int64_t dim = heads * d;
  const std::string label = fmt::format("packed qkv [{}, {}, 3 x {} heads x {}]{}{}", batch, tokens, heads, d,
                                        masked ? " with a key mask" : "", bf16 ? " bf16" : "");
  SCOPED_TRACE(label);
  const double kTol = bf16 ? kTolBf16 : ::engine::kTol, kGradTol = bf16 ? kTolBf16Grad : ::engine::kTol;
  auto maybe_round = [&](const Tensor& t) { return bf16 ? round_bf16(t) : t; };
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  Tensor qkv = maybe_round(Tensor::randn({batch, tokens, 3 * dim}, rng, DType::F32, 1.5));
  Tensor mask = masked ? random_mask(batch, tokens, rng) : Tensor();
  Tensor weights = maybe_round(Tensor::uniform({batch, tokens, dim}, rng, -1.5, 1.5));
  const PackedResult cpu = run_packed_on(Device::cpu(), qkv, heads, mask, scale, weights);
  const PackedResult gpu = run_packed_on(Device::cuda(), qkv, heads, mask, scale, weights);
  const PackedResult again = run_packed_on(Device::cuda(), qkv, heads, mask, scale, weights);
  EXPECT_TRUE(gpu.out.is_contiguous()) << label;
  expect_all_close(gpu.out, cpu.out, kTol, label + " output");
  expect_all_close(gpu.dqkv, cpu.dqkv, kGradTol, label + " d(qkv)");
  EXPECT_TRUE(gpu.out.to_doubles() == again.out.to_doubles()) << label << " output differs between two runs";
  EXPECT_TRUE(gpu.dqkv.to_doubles() == again.dqkv.to_doubles()) << label << " d(qkv) differs between two runs";
}

TEST(CudaAttention, PackedMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  Rng rng(38);
  for (int64_t n : {1, 17, 65, 197}) {
    for (int64_t d : {32, 64}) {
      for (bool masked : {false, true}) compare_packed_with_cpu(2, n, 3, d, masked, rng);
    }
  }
}

TEST(CudaAttention, PackedManyHeadsAndLongerSequences) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  Rng rng(39);
  compare_packed_with_cpu(7000, 3, 10, 32, true, rng);  // 70,000 (batch x head) pairs: several grid rows
  compare_packed_with_cpu(1, 128, 2, 64, true, rng);
  compare_packed_with_cpu(1, 75, 6, 64, false, rng);
  compare_packed_with_cpu(2, 300, 1, 32, true, rng);
}

TEST(CudaAttention, PackedMatchesUnpackedOnCuda) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  // The packed op and the composite it replaces (layout copies around
  // fused_attention) run the same kernels on the same values: identical.
  Rng rng(40);
  const int64_t batch = 2, tokens = 197, heads = 6, d = 64, dim = heads * d;
  Tensor qkv = Tensor::randn({batch, tokens, 3 * dim}, rng, DType::F32, 1.5).to(Device::cuda());
  Tensor mask = random_mask(batch, tokens, rng).to(Device::cuda());
  Tensor parts = permute(reshape(qkv, {batch, tokens, 3, heads, d}), {2, 0, 3, 1, 4}).contiguous();
  Tensor context = fused_attention(select(parts, 0, 0), select(parts, 0, 1), select(parts, 0, 2), 0.125, mask);
  Tensor expected = reshape(transpose(context, 1, 2), {batch, tokens, dim});
  expect_all_close(fused_attention_packed(qkv, heads, 0.125, mask), expected, 0.0, "packed vs unpacked on cuda");
}

TEST(CudaAttention, PackedMisalignedQkv) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  // A qkv view starting one float into its storage: its rows are not 16-byte
  // aligned, so the kernels read copies of q, k and v (the fallback); a
  // column slice (not contiguous) is copied by the op first.
  Rng rng(41);
  const int64_t batch = 2, tokens = 65, heads = 3, d = 32, dim = heads * d;
  const int64_t count = batch * tokens * 3 * dim;
  Tensor flat = Tensor::randn({count + 1}, rng);
  Tensor weights = Tensor::uniform({batch, tokens, dim}, rng, -1.0, 1.0);
  Tensor mask = random_mask(batch, tokens, rng);
  auto odd_view = [&](const Tensor& storage) {
    return reshape(narrow(storage, 0, 1, count), {batch, tokens, 3 * dim});
  };
  Tensor cpu_leaf = flat.detach(), gpu_leaf = flat.detach().to(Device::cuda());
  cpu_leaf.set_requires_grad(true);
  gpu_leaf.set_requires_grad(true);
  Tensor cpu = fused_attention_packed(odd_view(cpu_leaf), heads, 0.2, mask);
  Tensor gpu = fused_attention_packed(odd_view(gpu_leaf), heads, 0.2, mask.to(Device::cuda()));
  sum(mul(cpu, weights)).backward();
  sum(mul(gpu, weights.to(Device::cuda()))).backward();
  expect_all_close(gpu.detach(), cpu.detach(), kTol, "misaligned qkv output");
  expect_all_close(gpu_leaf.grad(), cpu_leaf.grad(), kTol, "misaligned qkv gradient");

  Tensor wide = Tensor::randn({batch, tokens, 3 * dim + 8}, rng);
  Tensor sliced_cpu = narrow(wide, 2, 4, 3 * dim), sliced_gpu = narrow(wide.to(Device::cuda()), 2, 4, 3 * dim);
  expect_all_close(fused_attention_packed(sliced_gpu, heads, 0.2), fused_attention_packed(sliced_cpu, heads, 0.2),
                   kTol, "column slice of qkv");
}

TEST(CudaAttention, LayerGradientsMatchCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  // The Attention layer's backward through the packed op on the GPU against
  // the CPU: d(x) and the qkv weight's gradient, ViT-S's 6 heads of 64, masked.
  Rng init(42);
  Attention cpu(384, 6, true, init);
  Rng init_again(42);
  Attention gpu(384, 6, true, init_again);
  move_parameters([&](const ParamVisitor& fn) { gpu.visit("", fn); }, Device::cuda());
  for (Attention* layer : {&cpu, &gpu}) {
    layer->visit("", [](const std::string&, Tensor& p) { p.set_requires_grad(true); });
  }
  Rng rng(43);
  Tensor x = Tensor::randn({2, 197, 384}, rng);
  Tensor w = Tensor::uniform({2, 197, 384}, rng, -1.0, 1.0);
  ForwardContext ctx_cpu, ctx_gpu;
  ctx_cpu.active = random_mask(2, 197, rng);
  ctx_gpu.active = ctx_cpu.active.to(Device::cuda());
  Tensor x_cpu = leaf_on(x, Device::cpu()), x_gpu = leaf_on(x, Device::cuda());
  sum(mul(cpu.forward(x_cpu, ctx_cpu, nullptr), w)).backward();
  sum(mul(gpu.forward(x_gpu, ctx_gpu, nullptr), w.to(Device::cuda()))).backward();
  expect_all_close(x_gpu.grad(), x_cpu.grad(), 1e-3, "d(x)");
  std::vector<Tensor> grads_cpu, grads_gpu;
  cpu.visit("", [&](const std::string&, Tensor& p) { grads_cpu.push_back(p.grad()); });
  gpu.visit("", [&](const std::string&, Tensor& p) { grads_gpu.push_back(p.grad()); });
  ASSERT_EQ(grads_cpu.size(), grads_gpu.size());
  for (size_t i = 0; i < grads_cpu.size(); ++i) {
    expect_all_close(grads_gpu[i], grads_cpu[i], 1e-3, "parameter " + std::to_string(i) + " gradient");
  }
}

TEST(CudaAttention, Errors) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  Rng rng(37);
  Tensor q48 = Tensor::randn({1, 2, 5, 48}, rng).to(Device::cuda());
  testing::expect_error_mentioning([&] { fused_attention(q48, q48, q48, 1.0); },
                                   {"fused_attention", "head_dim 48", "[1, 2, 5, 48]"});
  Tensor q64 = Tensor::randn({1, 2, 5, 64}, rng, DType::F64).to(Device::cuda());
  testing::expect_error_mentioning([&] { fused_attention(q64, q64, q64, 1.0); }, {"fused_attention", "float32"});
  EXPECT_TRUE(fused_attention_supported(Device::cuda(), DType::F32, 64));
  EXPECT_FALSE(fused_attention_supported(Device::cuda(), DType::F32, 48));
  EXPECT_FALSE(fused_attention_supported(Device::cuda(), DType::F64, 64));
  Tensor qkv48 = Tensor::randn({1, 5, 3 * 2 * 48}, rng).to(Device::cuda());
  testing::expect_error_mentioning([&] { fused_attention_packed(qkv48, 2, 1.0); },
                                   {"fused_attention", "head_dim 48"});
}

// ------------------------------------------------------------------ bf16 mode: the tensor-core kernels

TEST(CudaAttentionBf16, MatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
  Rng rng(131);
  for (int64_t n : {1, 17, 65, 197}) {
    for (int64_t d : {32, 64}) {
      for (bool masked : {false, true}) compare_with_cpu({2, 3, n, d}, masked, rng, true);
    }
  }
}

TEST(CudaAttentionBf16, ManyHeadsAndLongerSequences) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
  Rng rng(132);
  compare_with_cpu({7000, 10, 3, 32}, true, rng, true);  // several grid rows of (batch x head)
  compare_with_cpu({1, 2, 128, 64}, true, rng, true);
  compare_with_cpu({1, 2, 75, 64}, true, rng, true);
  compare_with_cpu({2, 1, 300, 32}, false, rng, true);
  compare_with_cpu({2, 6, 197, 64}, true, rng, true);  // ViT-S
}

TEST(CudaAttentionBf16, PackedMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
  Rng rng(138);
  for (int64_t n : {1, 17, 65, 197}) {
    for (int64_t d : {32, 64}) {
      for (bool masked : {false, true}) compare_packed_with_cpu(2, n, 3, d, masked, rng, true);
    }
  }
  compare_packed_with_cpu(7000, 3, 10, 32, true, rng, true);
  compare_packed_with_cpu(2, 197, 6, 64, true, rng, true);  // ViT-S
  compare_packed_with_cpu(2, 300, 1, 32, true, rng, true);
}

TEST(CudaAttentionBf16, RowsWithoutActiveKeysGiveZeros) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
  Rng rng(133);
  const Shape shape = {2, 2, 65, 64};
  Tensor q = round_bf16(Tensor::randn(shape, rng)), k = round_bf16(Tensor::randn(shape, rng));
  Tensor v = round_bf16(Tensor::randn(shape, rng));
  Tensor mask = random_mask(2, 65, rng);
  std::vector<float> values = mask.to_floats();
  std::fill(values.begin() + 65, values.end(), 0.0f);  // batch 1: no key at all
  mask = Tensor::from_vector<float>(values, {2, 65});
  Tensor weights = round_bf16(Tensor::uniform(shape, rng, -1.0, 1.0));
  const Result cpu = run_on(Device::cpu(), q, k, v, mask, 0.125, weights);
  const Result gpu = run_on(Device::cuda(), q, k, v, mask, 0.125, weights);
  expect_all_close(gpu.out, cpu.out, kTolBf16, "output");
  expect_all_close(gpu.dq, cpu.dq, kTolBf16Grad, "dq");
  expect_all_close(gpu.dk, cpu.dk, kTolBf16Grad, "dk");
  expect_all_close(gpu.dv, cpu.dv, kTolBf16Grad, "dv");
  for (const Tensor& t : {gpu.out, gpu.dq, gpu.dk, gpu.dv}) {
    std::vector<double> x = t.to_doubles();
    for (size_t i = x.size() / 2; i < x.size(); ++i) ASSERT_EQ(x[i], 0.0) << i;
  }
}

TEST(CudaAttentionBf16, RunsTheTensorCoreKernels) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  // On inputs that are not bf16-exact the two modes must differ (bf16 mode
  // rounds them), by about bf16's precision and no more.
  Rng rng(134);
  const Shape shape = {2, 3, 197, 64};
  Tensor q = Tensor::randn(shape, rng, DType::F32, 1.5).to(Device::cuda());
  Tensor k = Tensor::randn(shape, rng, DType::F32, 1.5).to(Device::cuda());
  Tensor v = Tensor::randn(shape, rng).to(Device::cuda());
  Tensor f32 = fused_attention(q, k, v, 0.125);
  Tensor bf16;
  {
    GemmPrecisionGuard guard(GemmPrecision::BFloat16);
    bf16 = fused_attention(q, k, v, 0.125);
  }
  EXPECT_FALSE(f32.to_doubles() == bf16.to_doubles()) << "bf16 mode gave float32 mode's bits";
  expect_all_close(bf16, f32.to(Device::cpu()), 5e-2, "bf16 vs float32 mode");
}

TEST(CudaAttentionBf16, OtherHeadDimsFallBackToFloat32) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  // No tensor-core kernel at head_dim 48: still the FMA kernels' error.
  GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
  Rng rng(135);
  Tensor q48 = Tensor::randn({1, 2, 5, 48}, rng).to(Device::cuda());
  testing::expect_error_mentioning([&] { fused_attention(q48, q48, q48, 1.0); },
                                   {"fused_attention", "head_dim 48", "[1, 2, 5, 48]"});
}

}  // namespace
}  // namespace engine

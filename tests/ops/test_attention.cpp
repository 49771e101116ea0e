// fused_attention against the materialising composite of existing ops
// (matmul, masked_fill, softmax, matmul), float64 gradient checks through the
// op, rows without keys, the Attention layer's two paths, and the errors;
// fused_attention_packed against the layout composite it replaces (permute,
// fused_attention, transpose), its float64 gradient check and its errors.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "engine/ops/attention/attention.h"
#include "engine/ops/index/index.h"
#include "engine/ops/matmul/matmul.h"
#include "engine/ops/softmax/softmax.h"
#include "engine/ops/view/view.h"
#include "layers/attention.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

// softmax(scale q k^T, dropped keys at -inf) v, materialising [B, H, N, N].
Tensor composite_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale, const Tensor& active) {
  Tensor scores = matmul(mul(q, scale), transpose(k, -2, -1));
  if (active.defined()) {
    Tensor dropped = reshape((1.0 - active).to(DType::U8), {active.size(0), 1, 1, active.size(1)});
    scores = masked_fill(scores, dropped, -std::numeric_limits<double>::infinity());
  }
  return matmul(softmax(scores), v);
}

// A [B, N] 0/1 mask in `dtype` that drops about a third of the keys, never key 0
// (like the class token, it keeps every row with a key).
Tensor random_mask(int64_t batch, int64_t tokens, Rng& rng, DType dtype = DType::F32) {
  std::vector<float> values(batch * tokens);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t j = 0; j < tokens; ++j) values[b * tokens + j] = j == 0 || rng.uniform() > 0.35 ? 1.0f : 0.0f;
  }
  return Tensor::from_vector<float>(values, {batch, tokens}).to(dtype);
}

Tensor leaf(const Shape& shape, Rng& rng, DType dtype, double stddev) {
  Tensor t = Tensor::randn(shape, rng, dtype, stddev);
  t.set_requires_grad(true);
  return t;
}

struct Case {
  Shape shape;  // [B, H, N, d]
  bool masked;
};

// Outputs and the gradients of sum(out * w) for q, k, v, through both paths.
void expect_fused_matches_composite(const Case& cs, DType dtype, double tolerance, Rng& rng) {
  SCOPED_TRACE(shape_str(cs.shape) + (cs.masked ? " masked " : " ") + dtype_name(dtype));
  const int64_t d = cs.shape[3];
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  Tensor q = leaf(cs.shape, rng, dtype, 1.5), k = leaf(cs.shape, rng, dtype, 1.5), v = leaf(cs.shape, rng, dtype, 1.0);
  Tensor active = cs.masked ? random_mask(cs.shape[0], cs.shape[2], rng) : Tensor();
  Tensor w = Tensor::uniform(cs.shape, rng, -1.0, 1.0, dtype);

  Tensor fused = fused_attention(q, k, v, scale, active);
  sum(mul(fused, w)).backward();
  std::vector<Tensor> fused_grads = {q.grad(), k.grad(), v.grad()};
  for (const Tensor* t : {&q, &k, &v}) t->zero_grad();

  Tensor expected = composite_attention(q, k, v, scale, active);
  sum(mul(expected, w)).backward();
  expect_close(fused.detach(), expected.detach(), tolerance);
  const char* names[] = {"dq", "dk", "dv"};
  std::vector<Tensor> expected_grads = {q.grad(), k.grad(), v.grad()};
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(names[i]);
    ASSERT_TRUE(fused_grads[i].defined());
    expect_close(fused_grads[i], expected_grads[i], tolerance);
  }
}

TEST(Attention, FusedMatchesComposite) {
  Rng rng(21);
  // One token; a few; the CIFAR ViT's 65 tokens at head_dim 64 (more rows
  // than any vector width); ViT-S's 197 tokens; an odd head_dim.
  const std::vector<Case> cases = {{{1, 1, 1, 4}, false}, {{2, 3, 5, 8}, true},   {{2, 2, 65, 64}, false},
                                   {{2, 3, 65, 32}, true}, {{1, 2, 197, 64}, true}, {{3, 1, 17, 5}, true}};
  for (const Case& cs : cases) {
    expect_fused_matches_composite(cs, DType::F64, 1e-11, rng);
    expect_fused_matches_composite(cs, DType::F32, 2e-5, rng);
  }
}

TEST(Attention, OutputIsAWeightedMeanOfValues) {
  // Equal keys: every probability is 1 / (active keys), so each output row is
  // the mean of the active values, whatever q.
  Rng rng(22);
  Tensor q = Tensor::randn({1, 1, 4, 2}, rng, DType::F64);
  Tensor k = Tensor::ones({1, 1, 4, 2}, DType::F64);
  Tensor v = Tensor::from_vector<double>({1, 10, 2, 20, 3, 30, 4, 40}, {1, 1, 4, 2});
  Tensor active = Tensor::from_vector<float>({1, 0, 1, 1}, {1, 4});
  std::vector<double> out = fused_attention(q, k, v, 0.7, active).to_doubles();
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(out[2 * i], (1 + 3 + 4) / 3.0, 1e-12);
    EXPECT_NEAR(out[2 * i + 1], (10 + 30 + 40) / 3.0, 1e-12);
  }
}

TEST(Attention, Gradients) {
  Rng rng(23);
  for (bool masked : {false, true}) {
    SCOPED_TRACE(masked ? "masked" : "all keys");
    const Shape shape = {2, 2, 5, 3};
    Tensor q = random_leaf(shape, rng, -1.5, 1.5), k = random_leaf(shape, rng, -1.5, 1.5);
    Tensor v = random_leaf(shape, rng);
    Tensor active = masked ? random_mask(2, 5, rng, DType::F64) : Tensor();
    expect_gradients_match([active](const auto& in) { return fused_attention(in[0], in[1], in[2], 0.8, active); },
                           {q, k, v});
  }
  // Non-contiguous inputs: q, k, v as [B, N, H, d] tensors transposed to [B, H, N, d].
  Tensor x = random_leaf({1, 4, 2, 3}, rng), y = random_leaf({1, 4, 2, 3}, rng), z = random_leaf({1, 4, 2, 3}, rng);
  expect_gradients_match(
      [](const auto& in) {
        return fused_attention(transpose(in[0], 1, 2), transpose(in[1], 1, 2), transpose(in[2], 1, 2), 0.5);
      },
      {x, y, z});
}

// q, k or v (part 0, 1, 2) of a packed [B, N, 3 H d] qkv as [B, H, N, d] views.
Tensor packed_part(const Tensor& qkv, int64_t heads, int64_t part) {
  const int64_t batch = qkv.size(0), tokens = qkv.size(1), d = qkv.size(2) / (3 * heads);
  return select(permute(reshape(qkv, {batch, tokens, 3, heads, d}), {2, 0, 3, 1, 4}), 0, part);
}

// What fused_attention_packed replaces: the layout copies around fused_attention.
Tensor packed_composite(const Tensor& qkv, int64_t heads, double scale, const Tensor& active) {
  Tensor context = fused_attention(packed_part(qkv, heads, 0), packed_part(qkv, heads, 1),
                                   packed_part(qkv, heads, 2), scale, active);
  return reshape(transpose(context, 1, 2), {qkv.size(0), qkv.size(1), qkv.size(2) / 3});
}

struct PackedCase {
  int64_t batch, tokens, heads, head_dim;
  bool masked;
};

// The output and d(qkv) of sum(out * w) through the packed op and through the
// composite: both run the same kernels, summing in the same order whatever
// the layout, so they agree exactly.
void expect_packed_matches_composite(const PackedCase& cs, DType dtype, Rng& rng) {
  const int64_t dim = cs.heads * cs.head_dim;
  SCOPED_TRACE(fmt::format("B {} N {} heads {} d {}{} {}", cs.batch, cs.tokens, cs.heads, cs.head_dim,
                           cs.masked ? " masked" : "", dtype_name(dtype)));
  const double scale = 1.0 / std::sqrt(static_cast<double>(cs.head_dim));
  Tensor qkv = leaf({cs.batch, cs.tokens, 3 * dim}, rng, dtype, 1.5);
  Tensor active = cs.masked ? random_mask(cs.batch, cs.tokens, rng) : Tensor();
  Tensor w = Tensor::uniform({cs.batch, cs.tokens, dim}, rng, -1.0, 1.0, dtype);

  Tensor packed = fused_attention_packed(qkv, cs.heads, scale, active);
  ASSERT_EQ(packed.shape(), (Shape{cs.batch, cs.tokens, dim}));
  EXPECT_TRUE(packed.is_contiguous());
  sum(mul(packed, w)).backward();
  Tensor packed_grad = qkv.grad();
  qkv.zero_grad();

  Tensor expected = packed_composite(qkv, cs.heads, scale, active);
  sum(mul(expected, w)).backward();
  expect_close(packed.detach(), expected.detach(), 0.0);
  ASSERT_TRUE(packed_grad.defined());
  expect_close(packed_grad, qkv.grad(), 0.0);
}

TEST(Attention, PackedMatchesComposite) {
  Rng rng(27);
  // The CIFAR ViT's 65 tokens (a block of 16 rows and one row) with 3 heads
  // of 64 and of 32, with and without a key mask; one token; 17; ViT-S's 197
  // tokens; an odd head_dim; one head.
  const std::vector<PackedCase> cases = {{2, 65, 3, 64, false}, {2, 65, 3, 64, true}, {2, 65, 3, 32, false},
                                         {2, 65, 3, 32, true},  {3, 1, 2, 32, true},   {2, 17, 3, 64, true},
                                         {1, 197, 2, 64, true}, {2, 9, 3, 5, true},    {2, 7, 1, 4, false}};
  for (const PackedCase& cs : cases) {
    expect_packed_matches_composite(cs, DType::F32, rng);
    expect_packed_matches_composite(cs, DType::F64, rng);
  }
}

TEST(Attention, PackedMatchesMaterialisedAttention) {
  // Independently of the kernels: against softmax(scale q k^T) v from matmul
  // and softmax, on the packed layout.
  Rng rng(28);
  const int64_t batch = 2, tokens = 65, heads = 3, d = 32, dim = heads * d;
  Tensor qkv = Tensor::randn({batch, tokens, 3 * dim}, rng, DType::F64, 1.5);
  Tensor active = random_mask(batch, tokens, rng);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  Tensor context = composite_attention(packed_part(qkv, heads, 0), packed_part(qkv, heads, 1),
                                       packed_part(qkv, heads, 2), scale, active);
  expect_close(fused_attention_packed(qkv, heads, scale, active),
               reshape(transpose(context, 1, 2), {batch, tokens, dim}), 1e-11);
}

TEST(Attention, PackedGradients) {
  Rng rng(29);
  for (bool masked : {false, true}) {
    SCOPED_TRACE(masked ? "masked" : "all keys");
    Tensor qkv = random_leaf({2, 5, 3 * 2 * 3}, rng, -1.5, 1.5);  // 2 heads of 3
    Tensor active = masked ? random_mask(2, 5, rng, DType::F64) : Tensor();
    expect_gradients_match([active](const auto& in) { return fused_attention_packed(in[0], 2, 0.8, active); },
                           {qkv});
  }
  // A qkv that is not contiguous (a column slice) is copied once; the
  // gradient still reaches it.
  Tensor wide = random_leaf({1, 4, 20}, rng, -1.5, 1.5);
  expect_gradients_match([](const auto& in) { return fused_attention_packed(narrow(in[0], 2, 1, 18), 3, 0.6); },
                         {wide});
}

TEST(Attention, RowsWithoutActiveKeysGiveZeros) {
  Rng rng(24);
  Tensor q = random_leaf({2, 1, 3, 2}, rng), k = random_leaf({2, 1, 3, 2}, rng), v = random_leaf({2, 1, 3, 2}, rng);
  Tensor active = Tensor::from_vector<float>({0, 0, 0, 1, 1, 0}, {2, 3});  // batch 0 has no key
  Tensor out = fused_attention(q, k, v, 1.0, active);
  sum(out).backward();
  std::vector<double> values = out.to_doubles();
  for (int i = 0; i < 6; ++i) EXPECT_EQ(values[i], 0.0) << i;
  for (int i = 6; i < 12; ++i) EXPECT_TRUE(std::isfinite(values[i])) << i;
  for (const Tensor* t : {&q, &k, &v}) {
    std::vector<double> g = t->grad().to_doubles();
    for (int i = 0; i < 6; ++i) EXPECT_EQ(g[i], 0.0) << i;
    for (double x : g) EXPECT_TRUE(std::isfinite(x));
  }
  // In batch 1 the dropped key gets no gradient either.
  std::vector<double> dk = k.grad().to_doubles(), dv = v.grad().to_doubles();
  EXPECT_EQ(dk[10], 0.0);
  EXPECT_EQ(dv[11], 0.0);
  EXPECT_NE(dv[6], 0.0);
}

TEST(Attention, LayerFusedPathMatchesProbabilityPath) {
  // Attention::forward uses the fused op unless the caller wants the
  // probabilities; both paths must agree, with and without a key mask.
  Rng rng(25);
  Attention attention(64, 2, true, rng);
  Tensor x = Tensor::randn({3, 17, 64}, rng);
  std::vector<ForwardContext> contexts(2);
  contexts[1].active = random_mask(3, 17, rng);
  for (const ForwardContext& ctx : contexts) {
    NoGradGuard no_grad;
    Tensor probs;
    Tensor fused = attention.forward(x, ctx, nullptr);
    Tensor composite = attention.forward(x, ctx, &probs);
    ASSERT_TRUE(probs.defined());
    expect_close(fused, composite, 2e-5);
  }
}

TEST(Attention, LayerFusedPathGradientsMatchProbabilityPath) {
  // The packed path's backward (d(qkv) straight from the kernels) against the
  // materialising path's: the gradients of x and of every parameter. With one
  // head, the gradient reaching the probability path's batched matmuls has a
  // size-1 head dim whose stride is not the batch's (a review found the GEMM
  // taking it for the batch stride).
  for (int64_t heads : {3, 1}) {
    SCOPED_TRACE(heads);
    Rng rng(30);
    Attention attention(96, heads, true, rng);
    std::vector<Tensor> params;
    attention.visit("", [&](const std::string&, Tensor& p) {
      p.set_requires_grad(true);
      params.push_back(p);
    });
    Tensor x = Tensor::randn({2, 65, 96}, rng);
    x.set_requires_grad(true);
    Tensor w = Tensor::uniform({2, 65, 96}, rng, -1.0, 1.0);
    ForwardContext ctx;
    ctx.active = random_mask(2, 65, rng);
    std::vector<std::vector<Tensor>> grads;
    for (bool fused : {true, false}) {
      Tensor probs;
      sum(mul(attention.forward(x, ctx, fused ? nullptr : &probs), w)).backward();
      grads.push_back({x.grad()});
      x.zero_grad();
      for (Tensor& p : params) {
        grads.back().push_back(p.grad());
        p.zero_grad();
      }
    }
    for (size_t i = 0; i < grads[0].size(); ++i) {
      SCOPED_TRACE(i == 0 ? std::string("x") : "parameter " + std::to_string(i - 1));
      ASSERT_TRUE(grads[0][i].defined() && grads[1][i].defined());
      expect_close(grads[0][i], grads[1][i], 1e-4);
    }
  }
}

TEST(Attention, LayerCountsTheSameGemmFlopsOnBothPaths) {
  // Models report GFLOPs from gemm_flops_so_far(): the fused path must count
  // the q k^T and p v products that the materialising path's matmuls count,
  // forward and backward.
  Rng rng(31);
  Attention attention(64, 2, true, rng);
  Tensor x = Tensor::randn({2, 9, 64}, rng);
  x.set_requires_grad(true);
  std::vector<int64_t> forward_flops, backward_flops;
  for (bool fused : {true, false}) {
    Tensor probs;
    const int64_t start = gemm_flops_so_far();
    Tensor out = attention.forward(x, ForwardContext{}, fused ? nullptr : &probs);
    const int64_t forwarded = gemm_flops_so_far();
    sum(out).backward();
    forward_flops.push_back(forwarded - start);
    backward_flops.push_back(gemm_flops_so_far() - forwarded);
  }
  const int64_t products = 2 * (2 * 2) * 9 * 9 * 32;  // 2 flops per multiply-add, B H = 2 x 2, N = 9, d = 32
  const int64_t projections = 2 * 18 * 64 * (3 * 64 + 64);  // qkv and proj over the 18 tokens
  EXPECT_EQ(forward_flops[0], projections + 2 * products);
  EXPECT_EQ(forward_flops[1], forward_flops[0]);
  EXPECT_EQ(backward_flops[1], backward_flops[0]);
}

TEST(Attention, Errors) {
  Rng rng(26);
  Tensor q = Tensor::randn({2, 3, 5, 4}, rng);
  expect_error_mentioning([&] { fused_attention(reshape(q, {6, 5, 4}), q, q, 1.0); },
                          {"fused_attention", "[B, H, N, d]", "[6, 5, 4]"});
  expect_error_mentioning([&] { fused_attention(q, narrow(q, 2, 0, 4), q, 1.0); },
                          {"fused_attention", "[2, 3, 5, 4]", "[2, 3, 4, 4]"});
  expect_error_mentioning([&] { fused_attention(q, q, q.to(DType::F64), 1.0); }, {"fused_attention", "float64"});
  expect_error_mentioning([&] { fused_attention(q, q, q, 1.0, Tensor::ones({2, 4})); },
                          {"fused_attention", "key_active", "[2, 5]", "[2, 4]"});
  expect_error_mentioning([&] { fused_attention(q, q, q, 1.0, Tensor::ones({2, 3, 5})); },
                          {"key_active", "[2, 3, 5]"});
  Tensor ints = reshape(Tensor::arange(120), {2, 3, 5, 4});
  expect_error_mentioning([&] { fused_attention(ints, ints, ints, 1.0); }, {"fused_attention", "int64"});
  expect_error_mentioning([&] { fused_attention(q, q, q, std::nan("")); }, {"scale"});
  EXPECT_FALSE(fused_attention_supported(Device::cpu(), DType::BF16, 64));

  // The packed op: qkv [B, N, 3 D] with D a multiple of heads.
  Tensor qkv = Tensor::randn({2, 5, 24}, rng);  // 3 x 2 heads of 4
  expect_error_mentioning([&] { fused_attention_packed(reshape(qkv, {10, 24}), 2, 1.0); },
                          {"fused_attention_packed", "[B, N, 3 D]", "[10, 24]"});
  expect_error_mentioning([&] { fused_attention_packed(qkv, 5, 1.0); },
                          {"fused_attention_packed", "heads = 5", "[2, 5, 24]"});
  expect_error_mentioning([&] { fused_attention_packed(narrow(qkv, 2, 0, 20), 2, 1.0); },
                          {"fused_attention_packed", "[2, 5, 20]"});
  expect_error_mentioning([&] { fused_attention_packed(qkv, 0, 1.0); }, {"fused_attention_packed", "heads", "0"});
  expect_error_mentioning([&] { fused_attention_packed(qkv, 2, 1.0, Tensor::ones({2, 4})); },
                          {"fused_attention_packed", "key_active", "[2, 5]", "[2, 4]"});
  expect_error_mentioning([&] { fused_attention_packed(reshape(Tensor::arange(240), {2, 5, 24}), 2, 1.0); },
                          {"fused_attention_packed", "int64"});
  expect_error_mentioning([&] { fused_attention_packed(qkv, 2, std::nan("")); }, {"fused_attention_packed", "scale"});
  expect_error_mentioning([&] { fused_attention_packed(Tensor(), 2, 1.0); }, {"fused_attention_packed", "defined"});
  EXPECT_TRUE(fused_attention_supported(Device::cpu(), DType::F64, 7));
}

}  // namespace
}  // namespace engine

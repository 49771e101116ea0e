// fused_attention against the materialising composite of existing ops
// (matmul, masked_fill, softmax, matmul), float64 gradient checks through the
// op, rows without keys, the Attention layer's two paths, and the errors.
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
#include "tests/expect_error.h"
#include "tests/gradcheck.h"

namespace engine {
namespace {

using testing::expect_close;
using testing::expect_error_mentioning;
using testing::expect_gradients_match;
using testing::random_leaf;

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
  EXPECT_TRUE(fused_attention_supported(Device::cpu(), DType::F64, 7));
}

}  // namespace
}  // namespace engine

#include "layers/attention.h"

#include <cmath>
#include <limits>

#include "engine/ops/attention/attention.h"
#include "engine/ops/elementwise/elementwise.h"
#include "engine/ops/index/index.h"
#include "engine/ops/matmul/matmul.h"
#include "engine/ops/softmax/softmax.h"
#include "engine/ops/view/view.h"
#include "layers/mixers/checks.h"

namespace engine {

namespace {

// Halted tokens (active = 0) as keys get a score of -inf: zero probability.
// Rows always keep a key, since the class token never halts.
Tensor mask_halted_keys(const Tensor& scores, const Tensor& active) {
  const int64_t batch = active.size(0), tokens = active.size(1);
  check(scores.size(0) == batch && scores.size(-1) == tokens, "attention: key mask {} for scores {}",
        ShapeText{active.shape()}, ShapeText{scores.shape()});
  Tensor halted = reshape((1.0 - active.detach()).to(DType::U8), {batch, 1, 1, tokens});
  return masked_fill(scores, halted, -std::numeric_limits<double>::infinity());
}

}  // namespace

Attention::Attention(int64_t dim, int64_t heads, bool qkv_bias, Rng& rng)
    : heads_(positive("attention: heads", heads)), qkv_(dim, 3 * dim, qkv_bias, rng), proj_(dim, dim, true, rng) {
  check(dim % heads == 0, "attention: dim {} is not divisible by {} heads", dim, heads);
}

Tensor Attention::attend(const Tensor& x, const ForwardContext& ctx, Tensor* attn_probs, const Tensor& residual) {
  return proj_.forward(mix_heads(qkv_.forward(x), ctx, attn_probs), residual);
}

Tensor Attention::forward_packed(const Tensor& x, const PaddedLayout& layout, ForwardContext ctx,
                                 const Tensor& residual) {
  ctx.active = layout.active;
  // A padding slot's q, k and v need no zeroing: it is masked as a key, and its row is dropped.
  return proj_.forward(layout.unpad(mix_heads(layout.pad(qkv_.forward(x)), ctx, nullptr)), residual);
}

Tensor Attention::mix_heads(const Tensor& qkv, const ForwardContext& ctx, Tensor* attn_probs) {
  const int64_t batch = qkv.size(0), tokens = qkv.size(1), dim = qkv.size(2) / 3;
  const int64_t head_dim = dim / heads_;
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  // (The computation's dtype is the weights': the block may have handed x to qkv_ as a bfloat16 operand.)
  if (attn_probs == nullptr && fused_attention_supported(qkv.device(), qkv_.weight.dtype(), head_dim)) {
    // Nobody needs the probabilities: the fused op never materialises them,
    // reads q, k and v straight from the projection's [B, N, 3D] output and
    // writes the context token-major, [B, N, D], the projection's input (and
    // its backward writes d(qkv) directly): no layout copies either way.
    return fused_attention_packed(qkv, heads_, scale, ctx.active);
  }
  // [B, N, 3D] -> [3, B, H, N, d]: q, k, v for every head. One copy here makes
  // q, k and v contiguous, so the GEMMs below read them in place (k as a
  // transposed operand).
  Tensor heads = permute(reshape(qkv, {batch, tokens, 3, heads_, head_dim}), {2, 0, 3, 1, 4}).contiguous();
  Tensor q = select(heads, 0, 0);
  Tensor k = select(heads, 0, 1);
  Tensor v = select(heads, 0, 2);
  Tensor scores = matmul(mul(q, scale), transpose(k, -2, -1));  // [B, H, N, N]
  if (ctx.active.defined()) scores = mask_halted_keys(scores, ctx.active);
  Tensor probs = softmax(scores);
  if (attn_probs) *attn_probs = probs;
  Tensor context = matmul(probs, v);  // [B, H, N, d]
  return reshape(transpose(context, 1, 2), {batch, tokens, dim});
}

void Attention::visit(const std::string& prefix, const ParamVisitor& fn) {
  qkv_.visit(join_name(prefix, "qkv"), fn);
  proj_.visit(join_name(prefix, "proj"), fn);
}

}  // namespace engine

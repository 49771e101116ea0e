// Multi-head self-attention with a fused qkv projection (timm layout):
// qkv = x W_qkv^T + b -> q, k, v per head; softmax(q k^T / sqrt(d)) v; proj.
// With ctx.active (A-ViT halting) halted tokens are masked out as keys (-inf
// before the softmax); their own query rows are computed and left to the caller.
// Unless the caller asks for the probabilities, it runs through fused_attention
// (engine/ops/attention), which never materialises them.
#pragma once
#include "layers/linear.h"
#include "layers/token_mixer.h"

namespace engine {

class Attention : public TokenMixer {
 public:
  Attention(int64_t dim, int64_t heads, bool qkv_bias, Rng& rng);
  std::string kind() const override { return "attention"; }
  Tensor forward(const Tensor& x, const ForwardContext& ctx, Tensor* attn_probs) override {
    return attend(x, ctx, attn_probs, Tensor());
  }
  Tensor forward_plus(const Tensor& x, const Tensor& residual, const ForwardContext& ctx) override {
    return attend(x, ctx, nullptr, residual);
  }
  // The projections run on the packed tokens; only q, k and v are padded.
  Tensor forward_packed(const Tensor& x, const PaddedLayout& layout, ForwardContext ctx,
                        const Tensor& residual) override;
  bool input_feeds_linear() const override { return true; }  // x only enters the qkv projection
  void visit(const std::string& prefix, const ParamVisitor& fn) override;
  int64_t heads() const { return heads_; }

 private:
  // The branch output, plus residual when given (added by proj's GEMM).
  Tensor attend(const Tensor& x, const ForwardContext& ctx, Tensor* attn_probs, const Tensor& residual);
  // qkv [B, N, 3D] -> the heads' context [B, N, D], proj's input.
  Tensor mix_heads(const Tensor& qkv, const ForwardContext& ctx, Tensor* attn_probs);
  int64_t heads_;
  Linear qkv_, proj_;
};

}  // namespace engine

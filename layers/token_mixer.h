// The attention branch of a transformer block, as an interface: multi-head
// self-attention is one implementation; the sequential mixers (linear
// recurrences, selective scans) that replace it and the baselines (per-token
// MLP, token conv, identity) are others (layers/mixers/). Input and output
// are [B, N, D] (the block's LN1 output in, the branch output before the
// residual add out).
#pragma once
#include <string>

#include "engine/ops/elementwise/elementwise.h"
#include "layers/module.h"
#include "layers/padded_layout.h"

namespace engine {

class TokenMixer {
 public:
  virtual ~TokenMixer() = default;
  virtual std::string kind() const = 0;  // "attention", "gated_rnn", ... (saved in config.json)
  // When attn_probs is non-null and the mixer has attention probabilities, it
  // stores them there ([B, heads, N, N], softmax output).
  virtual Tensor forward(const Tensor& x, const ForwardContext& ctx, Tensor* attn_probs) = 0;
  // residual + forward(x, ctx, nullptr): the block's residual add, which a
  // mixer that ends in a linear layer does inside that layer's GEMM.
  virtual Tensor forward_plus(const Tensor& x, const Tensor& residual, const ForwardContext& ctx) {
    return add(residual, forward(x, ctx, nullptr));
  }
  // The mixer on tokens packed from images of different lengths, [T, D] ->
  // [T, D] (A-ViT's compacted path, and avit_mix's kept-first layout), laid
  // out per image by `layout`, whose `active` marks padding and halted
  // tokens; plus residual when defined. The default pads, mixes the
  // [B, K, D] batch and unpads; a mixer whose per-token projections come
  // first and last may run them on the T tokens and pad only what mixes.
  virtual Tensor forward_packed(const Tensor& x, const PaddedLayout& layout, ForwardContext ctx,
                                const Tensor& residual);
  virtual void visit(const std::string& prefix, const ParamVisitor& fn) = 0;
  // True when the mixer uses its input only as the x of linear layers: the
  // block may then hand it over already as their GEMM operand (bfloat16 on a
  // GPU in bf16 mode: LayerNorm::forward_for_linear).
  virtual bool input_feeds_linear() const { return false; }
  // True when, given ctx.active (A-ViT's halting), the output at the kept
  // tokens is what the mixer gives on the kept tokens alone: attention masks
  // the halted ones as keys, the scans make them identity steps, per-token
  // mixers never look at them. A conv over tokens reads its neighbours by
  // position, halted or not: false (models/avit.cpp then lays the kept tokens
  // out next to each other for it).
  virtual bool skips_halted_tokens() const { return true; }
};

}  // namespace engine

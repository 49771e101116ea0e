// Pre-norm transformer block: h = x + mixer(LN1(x)), then out = h + MLP(LN2(h)),
// each branch under drop-path in training.
#pragma once
#include <functional>
#include <memory>

#include "layers/layernorm.h"
#include "layers/mlp.h"
#include "layers/token_mixer.h"

namespace engine {

// What a block exposes on request (later stages need the block input and the
// attention-branch output for distillation, the probabilities for sparsity).
struct BlockTrace {
  bool want_probs = false;  // ask the mixer for attention probabilities
  Tensor input;             // x entering the block
  Tensor mixer_input;       // LN1(x)
  Tensor mixer_output;      // the attention-branch output (before the residual)
  Tensor attn_probs;        // [B, H, N, N] when want_probs and the mixer has them
  Tensor output;
};

struct Block {
  LayerNorm norm1, norm2;
  std::unique_ptr<TokenMixer> mixer;  // "attn" in checkpoint names
  Mlp mlp;
  double drop_path_rate = 0.0;

  Tensor forward(const Tensor& x, const ForwardContext& ctx, BlockTrace* trace = nullptr);
  // The same block with `mix` in place of the mixer call: LN1(x) -> mix -> branch
  // output (A-ViT's compacted path runs the mixer on a re-laid-out batch).
  using MixFn = std::function<Tensor(const Tensor& normed, Tensor* attn_probs)>;
  // mixer_input_for_linear: hand LN1(x) to the mixer as the GEMM operand of
  // its linears (only when the mixer's input_feeds_linear() and no trace
  // keeps LN1(x)). LN2(h) always goes to the MLP so.
  Tensor forward_with(const Tensor& x, const MixFn& mix, const ForwardContext& ctx, BlockTrace* trace = nullptr,
                      bool mixer_input_for_linear = false);
  // Inference on tokens packed from images of different lengths, [T, D]
  // (A-ViT's compacted path): the mixer through TokenMixer::forward_packed,
  // both residual adds inside the branches' last GEMMs where they can be.
  Tensor forward_packed(const Tensor& x, const PaddedLayout& layout);
  void visit(const std::string& prefix, const ParamVisitor& fn);
};

}  // namespace engine

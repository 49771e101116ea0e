// Baseline with local mixing only: a depthwise 1-D convolution over the token
// sequence (odd kernel K, per-channel weights and bias), then a Linear D -> D.
// Bidirectional (the default) pads 'same': token t sees t - K/2 .. t + K/2;
// forward-only pads causally: t sees t - K + 1 .. t. Parameters under the
// block's "attn" prefix: conv.{weight [D, 1, K], bias [D]}, proj.{weight [D, D], bias [D]}.
#pragma once
#include "layers/linear.h"
#include "layers/mixers/depthwise_conv.h"
#include "layers/token_mixer.h"

namespace engine {

class ConvMixer : public TokenMixer {
 public:
  ConvMixer(int64_t dim, int64_t kernel, bool bidirectional, Rng& rng);
  std::string kind() const override { return "conv"; }
  Tensor forward(const Tensor& x, const ForwardContext& ctx, Tensor* attn_probs) override;
  void visit(const std::string& prefix, const ParamVisitor& fn) override;
  bool skips_halted_tokens() const override { return conv_.taps() == 1; }

 private:
  bool bidirectional_;
  DepthwiseConv1d conv_;
  Linear proj_;
};

}  // namespace engine

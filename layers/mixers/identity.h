// Baseline: the attention branch removed. The mixer outputs zeros, so the
// block's residual passes x on unchanged (x + 0); it has no parameters. In a
// block (forward_plus, forward_packed) it hands the residual back as it is,
// rather than adding a tensor of zeros to it.
#pragma once
#include "layers/token_mixer.h"

namespace engine {

class IdentityMixer : public TokenMixer {
 public:
  std::string kind() const override { return "identity"; }
  Tensor forward(const Tensor& x, const ForwardContext& ctx, Tensor* attn_probs) override;
  Tensor forward_plus(const Tensor& x, const Tensor& residual, const ForwardContext& ctx) override;
  Tensor forward_packed(const Tensor& x, const PaddedLayout& layout, ForwardContext ctx,
                        const Tensor& residual) override;
  void visit(const std::string&, const ParamVisitor&) override {}
};

}  // namespace engine

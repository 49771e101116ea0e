// Baseline: the attention branch removed. The mixer outputs zeros, so the
// block's residual passes x on unchanged (x + 0); it has no parameters.
#pragma once
#include "layers/token_mixer.h"

namespace engine {

class IdentityMixer : public TokenMixer {
 public:
  std::string kind() const override { return "identity"; }
  Tensor forward(const Tensor& x, const ForwardContext& ctx, Tensor* attn_probs) override;
  void visit(const std::string&, const ParamVisitor&) override {}
};

}  // namespace engine

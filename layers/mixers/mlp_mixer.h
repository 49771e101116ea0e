// Baseline without token mixing: a per-token MLP, fc1 (D -> hidden) -> GELU ->
// fc2 (hidden -> D). Parameters under the block's "attn" prefix:
// fc1.{weight [hidden, D], bias}, fc2.{weight [D, hidden], bias}.
#pragma once
#include "layers/mlp.h"
#include "layers/token_mixer.h"

namespace engine {

class MlpMixer : public TokenMixer {
 public:
  MlpMixer(int64_t dim, int64_t hidden, Rng& rng);
  std::string kind() const override { return "mlp"; }
  Tensor forward(const Tensor& x, const ForwardContext& ctx, Tensor* attn_probs) override;
  // Per token, so the residual add is fc2's and packed tokens need no padding.
  Tensor forward_plus(const Tensor& x, const Tensor& residual, const ForwardContext& ctx) override;
  Tensor forward_packed(const Tensor& x, const PaddedLayout& layout, ForwardContext ctx,
                        const Tensor& residual) override;
  bool input_feeds_linear() const override { return true; }  // x only enters fc1
  void visit(const std::string& prefix, const ParamVisitor& fn) override { mlp_.visit(prefix, fn); }

 private:
  Mlp mlp_;
};

}  // namespace engine

// Gated diagonal linear recurrence mixer (RG-LRU-like), width E:
//   u, r, g = in_proj(x)                       (D -> 3E, split in that order)
//   a = sigmoid(r)                             (in_proj's bias on r is the gate bias b_a)
//   h_t = a_t h_{t-1} + (1 - a_t) u_t          forward, plus the same recurrence
//                                              backward when bidirectional (summed)
//   y = out_proj(silu(g) * h)                  (E -> D)
// Tokens that ctx.active marks halted (A-ViT) are identity steps of the scans
// (a = 1 and input b = (1 - a) u = 0): h passes them unchanged.
// The forward and backward scans share u and a. Parameters under the block's
// "attn" prefix: in_proj.{weight [3E, D], bias [3E]}, out_proj.{weight [D, E],
// bias [D]}: 4ED + 3E + D in all, about half of attention's 4D^2 + 4D at the
// default E = D / 2.
#pragma once
#include "layers/linear.h"
#include "layers/token_mixer.h"

namespace engine {

class GatedRnn : public TokenMixer {
 public:
  GatedRnn(int64_t dim, int64_t width, bool bidirectional, Rng& rng);
  std::string kind() const override { return "gated_rnn"; }
  Tensor forward(const Tensor& x, const ForwardContext& ctx, Tensor*) override { return mix(x, ctx, Tensor()); }
  Tensor forward_plus(const Tensor& x, const Tensor& residual, const ForwardContext& ctx) override {
    return mix(x, ctx, residual);
  }
  // The projections run on the packed tokens; only the scans and the gate see
  // the padding (identity steps of the scans, as halted tokens are).
  Tensor forward_packed(const Tensor& x, const PaddedLayout& layout, ForwardContext ctx,
                        const Tensor& residual) override;
  void visit(const std::string& prefix, const ParamVisitor& fn) override;
  bool input_feeds_linear() const override { return true; }  // x only enters in_proj

 private:
  // The branch output, plus residual when given (added by out_proj's GEMM).
  Tensor mix(const Tensor& x, const ForwardContext& ctx, const Tensor& residual) const;
  // in_proj's output (u, r, g) [B, N, 3E] -> silu(g) * (h_fwd + h_bwd) [B, N, E], out_proj's input.
  Tensor scan_and_gate(const Tensor& projected, const ForwardContext& ctx) const;
  int64_t width_;
  bool bidirectional_;
  Linear in_proj_, out_proj_;
};

}  // namespace engine

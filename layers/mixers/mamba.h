// Selective state-space mixer (Mamba's S6 block, Vision Mamba "v1" style,
// bidirectional by default), with d_inner = expand * D, state size S, conv
// taps K and dt_rank R = ceil(D / 16):
//   xi, z = in_proj(x)                                    (D -> 2 d_inner, no bias)
//   per direction (forward; backward too when bidirectional):
//     xc = silu(conv1d(xi))                               depthwise, causal in the scan direction (one kernel)
//     dt_low, Bm, Cm = x_proj(xc)                         (d_inner -> R + 2S, no bias)
//     dt = softplus(dt_proj(dt_low))                      (R -> d_inner; one op, softplus_linear)
//     y_dir = selective_scan_log_a(xc, dt, A_log, Bm, Cm, D)  (A = -exp(A_log), computed by the scan)
//   out = out_proj((y_fwd + y_bwd) * silu(z))             (d_inner -> D, no bias)
// The parameter D [d_inner] (Mamba's name) is the scan's skip weight, y += D * xc,
// not the width D. Each direction has its own conv1d, x_proj, dt_proj, A_log and D.
// Parameters under the block's "attn" prefix use Vision Mamba's names (the
// backward direction's carry a "_b"): in_proj.weight, conv1d.{weight [d_inner, 1, K],
// bias}, x_proj.weight, dt_proj.{weight, bias}, A_log [d_inner, S], D [d_inner],
// conv1d_b.*, x_proj_b.*, dt_proj_b.*, A_b_log, D_b, out_proj.weight.
#pragma once
#include <vector>

#include "layers/linear.h"
#include "layers/mixers/depthwise_conv.h"
#include "layers/token_mixer.h"

namespace engine {

class Mamba : public TokenMixer {
 public:
  Mamba(int64_t dim, int64_t d_state, int64_t expand, int64_t d_conv, bool bidirectional, Rng& rng);
  std::string kind() const override { return "mamba"; }
  Tensor forward(const Tensor& x, const ForwardContext& ctx, Tensor*) override { return mix(x, ctx, Tensor()); }
  Tensor forward_plus(const Tensor& x, const Tensor& residual, const ForwardContext& ctx) override {
    return mix(x, ctx, residual);
  }
  // in_proj runs on the packed tokens; the convs and scans on the padded layout.
  Tensor forward_packed(const Tensor& x, const PaddedLayout& layout, ForwardContext ctx,
                        const Tensor& residual) override;
  void visit(const std::string& prefix, const ParamVisitor& fn) override;
  bool input_feeds_linear() const override { return true; }  // x only enters in_proj
  // Halted tokens are identity steps of the scan, but the conv before it reads them.
  bool skips_halted_tokens() const override { return directions_[0].conv1d.taps() == 1; }

 private:
  // The branch output, plus residual when given (added by out_proj's GEMM).
  Tensor mix(const Tensor& x, const ForwardContext& ctx, const Tensor& residual) const;
  // in_proj: {xi, z}, each [.., d_inner].
  std::vector<Tensor> project(const Tensor& x) const;
  // The directions' scans of xi [B, N, d_inner], summed and gated by silu(z): out_proj's input.
  Tensor scan_and_gate(const Tensor& xi, const Tensor& z, const Tensor& active) const;
  // The parameters of one scan direction.
  struct Direction {
    DepthwiseConv1d conv1d;
    Linear x_proj, dt_proj;
    Tensor A_log, D;

    Direction(int64_t d_inner, int64_t d_state, int64_t dt_rank, int64_t d_conv, Rng& rng);
    // active: undefined, or [B, N] 0/1 (halted tokens become identity steps).
    Tensor forward(const Tensor& xi, bool reverse, const Tensor& active) const;
    void visit(const std::string& prefix, const std::string& suffix, const ParamVisitor& fn);
  };

  int64_t d_inner_;
  Linear in_proj_, out_proj_;
  std::vector<Direction> directions_;  // [forward] or [forward, backward]
};

}  // namespace engine

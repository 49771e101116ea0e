#include "layers/mixers/gated_rnn.h"

#include <cmath>

#include "engine/ops/copy/copy.h"
#include "engine/ops/elementwise/elementwise.h"
#include "engine/ops/index/index.h"
#include "engine/ops/scan/scan.h"
#include "engine/ops/view/view.h"
#include "layers/mixers/checks.h"

namespace engine {

namespace {

// Gate biases giving memory lengths 1 / (1 - a) log-uniform in [2, 64]
// tokens: some channels mix locally, others across a whole 197-token image.
// sigmoid(b) = 1 - 1/tau  <=>  b = log(tau - 1).
Tensor gate_bias(int64_t width, Rng& rng) {
  std::vector<float> values(static_cast<size_t>(width));
  for (float& v : values) {
    const double tau = std::exp(rng.uniform(std::log(2.0), std::log(64.0)));
    v = static_cast<float>(std::log(tau - 1.0));
  }
  return Tensor::from_vector(values, {width});
}

}  // namespace

GatedRnn::GatedRnn(int64_t dim, int64_t width, bool bidirectional, Rng& rng)
    : width_(positive("gated_rnn: width", width)), bidirectional_(bidirectional), in_proj_(dim, 3 * width_, true, rng),
      out_proj_(width_, dim, true, rng) {
  // in_proj's bias on r (rows width .. 2 width) is the gate bias.
  copy_into(narrow(in_proj_.bias, 0, width_, width_), gate_bias(width_, rng));
}

Tensor GatedRnn::mix(const Tensor& x, const ForwardContext& ctx, const Tensor& residual) const {
  return out_proj_.forward(scan_and_gate(in_proj_.forward(x), ctx), residual);
}

Tensor GatedRnn::forward_packed(const Tensor& x, const PaddedLayout& layout, ForwardContext ctx,
                                const Tensor& residual) {
  ctx.active = layout.active;
  return out_proj_.forward(layout.unpad(scan_and_gate(layout.pad(in_proj_.forward(x)), ctx)), residual);
}

Tensor GatedRnn::scan_and_gate(const Tensor& projected, const ForwardContext& ctx) const {
  // u, r (the gate's logits) and g: slices of one projection, which the scans read in place.
  const std::vector<Tensor> urg = split(projected, {width_, width_, width_}, -1);
  const Tensor &u = urg[0], &r = urg[1], &g = urg[2];
  // Halted tokens become identity steps (a = 1, no input): the state passes them unchanged.
  const Tensor keep = ctx.active.defined() ? ctx.active.detach() : Tensor();
  const Tensor h_fwd = gated_scan(u, r, keep, /*reverse=*/false);
  const Tensor h_bwd = bidirectional_ ? gated_scan(u, r, keep, /*reverse=*/true) : Tensor();
  return silu_gated_sum(h_fwd, h_bwd, g);
}

void GatedRnn::visit(const std::string& prefix, const ParamVisitor& fn) {
  in_proj_.visit(join_name(prefix, "in_proj"), fn);
  out_proj_.visit(join_name(prefix, "out_proj"), fn);
}

}  // namespace engine

#include "layers/block.h"

#include "engine/ops/dropout/dropout.h"
#include "engine/ops/elementwise/elementwise.h"

namespace engine {

namespace {
Tensor residual_branch(const Tensor& branch, double drop_rate, const ForwardContext& ctx) {
  if (!ctx.training || drop_rate == 0.0) return branch;
  check(ctx.rng != nullptr, "training forward with drop-path needs an Rng in the ForwardContext");
  return drop_path(branch, drop_rate, true, *ctx.rng);
}
}  // namespace

Tensor Block::forward(const Tensor& x, const ForwardContext& ctx, BlockTrace* trace) {
  return forward_with(
      x, [&](const Tensor& normed, Tensor* probs) { return mixer->forward(normed, ctx, probs); }, ctx, trace,
      trace == nullptr && mixer->input_feeds_linear());
}

Tensor Block::forward_with(const Tensor& x, const MixFn& mix, const ForwardContext& ctx, BlockTrace* trace,
                           bool mixer_input_for_linear) {
  Tensor normed = mixer_input_for_linear ? norm1.forward_for_linear(x) : norm1.forward(x);
  Tensor probs;
  Tensor mixed = mix(normed, trace && trace->want_probs ? &probs : nullptr);
  Tensor h = add(x, residual_branch(mixed, drop_path_rate, ctx));
  Tensor out = add(h, residual_branch(mlp.forward(norm2.forward_for_linear(h)), drop_path_rate, ctx));
  if (trace) {
    trace->input = x;
    trace->mixer_input = normed;
    trace->mixer_output = mixed;
    trace->attn_probs = probs;
    trace->output = out;
  }
  return out;
}

void Block::visit(const std::string& prefix, const ParamVisitor& fn) {
  norm1.visit(join_name(prefix, "norm1"), fn);
  mixer->visit(join_name(prefix, "attn"), fn);
  norm2.visit(join_name(prefix, "norm2"), fn);
  mlp.visit(join_name(prefix, "mlp"), fn);
}

}  // namespace engine

#include "layers/block.h"

#include "engine/ops/dropout/dropout.h"
#include "engine/ops/elementwise/elementwise.h"

namespace engine {

namespace {
bool drops_paths(double drop_rate, const ForwardContext& ctx) { return ctx.training && drop_rate != 0.0; }

Tensor residual_branch(const Tensor& branch, double drop_rate, const ForwardContext& ctx) {
  if (!drops_paths(drop_rate, ctx)) return branch;
  check(ctx.rng != nullptr, "training forward with drop-path needs an Rng in the ForwardContext");
  return drop_path(branch, drop_rate, true, *ctx.rng);
}
}  // namespace

Tensor Block::forward(const Tensor& x, const ForwardContext& ctx, BlockTrace* trace) {
  if (trace == nullptr && !drops_paths(drop_path_rate, ctx)) {
    // Both residual adds inside the branches' last GEMMs (the mixer's output
    // projection, fc2; TokenMixer::forward_plus), and in the backward the
    // stream's two gradients summed by the norms' kernels: the stream enters
    // each branch through its norm, which passes it on to the add.
    const std::vector<Tensor> stream_and_normed = norm1.forward_passing_input(x, mixer->input_feeds_linear());
    const Tensor h = mixer->forward_plus(stream_and_normed[1], stream_and_normed[0], ctx);
    const std::vector<Tensor> h_and_normed = norm2.forward_passing_input(h, /*for_linear=*/true);
    return mlp.forward(h_and_normed[1], h_and_normed[0]);
  }
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
  // Without drop-path (inference, or a rate of 0) fc2's GEMM adds the residual itself.
  const Tensor mlp_input = norm2.forward_for_linear(h);
  Tensor out = drops_paths(drop_path_rate, ctx) ? add(h, residual_branch(mlp.forward(mlp_input), drop_path_rate, ctx))
                                                : mlp.forward(mlp_input, h);
  if (trace) {
    trace->input = x;
    trace->mixer_input = normed;
    trace->mixer_output = mixed;
    trace->attn_probs = probs;
    trace->output = out;
  }
  return out;
}

Tensor Block::forward_packed(const Tensor& x, const PaddedLayout& layout) {
  const Tensor normed = mixer->input_feeds_linear() ? norm1.forward_for_linear(x) : norm1.forward(x);
  const Tensor h = mixer->forward_packed(normed, layout, {}, x);
  return mlp.forward(norm2.forward_for_linear(h), h);
}

void Block::visit(const std::string& prefix, const ParamVisitor& fn) {
  norm1.visit(join_name(prefix, "norm1"), fn);
  mixer->visit(join_name(prefix, "attn"), fn);
  norm2.visit(join_name(prefix, "norm2"), fn);
  mlp.visit(join_name(prefix, "mlp"), fn);
}

}  // namespace engine

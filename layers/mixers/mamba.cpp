#include "layers/mixers/mamba.h"

#include <cmath>

#include "engine/device.h"
#include "engine/ops/elementwise/elementwise.h"
#include "engine/ops/index/index.h"
#include "engine/ops/matmul/matmul.h"
#include "engine/ops/scan/selective_scan.h"
#include "engine/ops/softplus_linear/softplus_linear.h"
#include "engine/ops/view/view.h"
#include "layers/mixers/checks.h"

namespace engine {

namespace {

// Mamba's dt_proj init: weight uniform in +-1/sqrt(R); bias the inverse
// softplus of a step dt log-uniform in [1e-3, 1e-1].
void init_dt_proj(Linear& dt_proj, int64_t dt_rank, Rng& rng) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(dt_rank));
  dt_proj.weight = Tensor::uniform(dt_proj.weight.shape(), rng, -bound, bound);
  std::vector<float> bias(static_cast<size_t>(dt_proj.out_features()));
  for (float& b : bias) {
    const double dt = std::exp(rng.uniform(std::log(1e-3), std::log(1e-1)));
    b = static_cast<float>(dt + std::log(-std::expm1(-dt)));  // softplus(b) = dt
  }
  dt_proj.bias = Tensor::from_vector(bias, {dt_proj.out_features()});
}

// S4D-real init: A[c, s] = -(s + 1) for every channel, stored as log(-A).
Tensor a_log_init(int64_t d_inner, int64_t d_state) {
  std::vector<float> values(static_cast<size_t>(d_inner * d_state));
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(std::log(1.0 + i % d_state));
  return Tensor::from_vector(values, {d_inner, d_state});
}

}  // namespace

Mamba::Direction::Direction(int64_t d_inner, int64_t d_state, int64_t dt_rank, int64_t d_conv, Rng& rng)
    : conv1d(d_inner, d_conv, rng), x_proj(d_inner, dt_rank + 2 * d_state, false, rng),
      dt_proj(dt_rank, d_inner, true, rng), A_log(a_log_init(d_inner, d_state)), D(Tensor::ones({d_inner})) {
  init_dt_proj(dt_proj, dt_rank, rng);
}

Tensor Mamba::Direction::forward(const Tensor& xi, bool reverse, const Tensor& active) const {
  const Tensor xc = conv1d.forward_silu(xi, /*pad_left=*/conv1d.taps() - 1, reverse);
  const int64_t dt_rank = dt_proj.in_features(), d_state = A_log.size(1);
  std::vector<Tensor> parts = split(x_proj.forward(xc), {dt_rank, d_state, d_state}, -1);
  // dt_proj and softplus as one kernel that reads the dt rows of x_proj's
  // output in place (K = dt_rank) and writes dt once.
  Tensor dt = softplus_linear(parts[0], dt_proj.weight, dt_proj.bias);
  // Halted tokens: dt = 0 makes the step exp(0 A) = 1 with no input, an identity
  // step of the scan (the conv taps still read their frozen values).
  if (active.defined()) dt = dt * unsqueeze(active.detach(), -1);
  return selective_scan_log_a(xc, dt, A_log, parts[1], parts[2], D, reverse);
}

void Mamba::Direction::visit(const std::string& prefix, const std::string& suffix, const ParamVisitor& fn) {
  conv1d.visit(join_name(prefix, "conv1d" + suffix), fn);
  x_proj.visit(join_name(prefix, "x_proj" + suffix), fn);
  dt_proj.visit(join_name(prefix, "dt_proj" + suffix), fn);
  fn(join_name(prefix, "A" + suffix + "_log"), A_log);
  fn(join_name(prefix, "D" + suffix), D);
}

Mamba::Mamba(int64_t dim, int64_t d_state, int64_t expand, int64_t d_conv, bool bidirectional, Rng& rng)
    : d_inner_(positive("mamba: expand", expand) * dim) {
  positive("mamba: d_state", d_state);
  positive("mamba: conv_kernel", d_conv);
  const int64_t dt_rank = (dim + 15) / 16;
  // Assigned here rather than initialised in member order (in_proj_,
  // out_proj_, directions_), so that rng draws the weights in the order the
  // data meets them: in_proj, each direction, out_proj.
  in_proj_ = Linear(dim, 2 * d_inner_, false, rng);
  for (int i = 0; i < (bidirectional ? 2 : 1); ++i) directions_.emplace_back(d_inner_, d_state, dt_rank, d_conv, rng);
  out_proj_ = Linear(d_inner_, dim, false, rng);
}

Tensor Mamba::mix(const Tensor& x, const ForwardContext& ctx, const Tensor& residual) const {
  const std::vector<Tensor> xz = project(x);
  return out_proj_.forward(scan_and_gate(xz[0], xz[1], ctx.active), residual);
}

Tensor Mamba::forward_packed(const Tensor& x, const PaddedLayout& layout, ForwardContext,
                             const Tensor& residual) {
  const std::vector<Tensor> xz = project(x);
  Tensor xi = layout.pad(xz[0]);
  // Zeroed padding and halted tokens, as TokenMixer::forward_packed zeroes x
  // (in_proj has no bias): the convs read the slots after an image's last token.
  if (layout.active.defined()) xi = mul(xi, unsqueeze(layout.active, -1));
  return out_proj_.forward(layout.unpad(scan_and_gate(xi, layout.pad(xz[1]), layout.active)), residual);
}

std::vector<Tensor> Mamba::project(const Tensor& x) const {
  // in_proj as two GEMMs, one per half of its rows: xi and z each come out
  // contiguous. (The halves of one [.., 2 d_inner] output are strided views,
  // which the conv of each direction and silu would each copy: three copies
  // of [B, N, d_inner]. H200, the CIFAR ViT-Ti with 4 mamba blocks at batch
  // 256, graph replays: 6.75 -> 6.59 ms.) The weight's halves come from one
  // split, whose backward writes both halves' gradients into one buffer.
  const std::vector<Tensor> halves = split(in_proj_.weight, {d_inner_, d_inner_}, 0);
  return {linear(x, halves[0]), linear(x, halves[1])};
}

Tensor Mamba::scan_and_gate(const Tensor& xi, const Tensor& z, const Tensor& active) const {
  Tensor y_fwd, y_bwd;
  auto forward_pass = [&] { y_fwd = directions_[0].forward(xi, /*reverse=*/false, active); };
  if (directions_.size() == 1) {
    forward_pass();
  } else {
    // The directions' 4 kernels each are independent: on a GPU they overlap
    // (at batch 1, where every kernel is short, the block's time is its
    // chain of dependent kernels).
    run_branches(xi.device(), forward_pass,
                 [&] { y_bwd = directions_[1].forward(xi, /*reverse=*/true, active); });
  }
  return silu_gated_sum(y_fwd, y_bwd, z);
}

void Mamba::visit(const std::string& prefix, const ParamVisitor& fn) {
  in_proj_.visit(join_name(prefix, "in_proj"), fn);
  for (size_t i = 0; i < directions_.size(); ++i) directions_[i].visit(prefix, i == 1 ? "_b" : "", fn);
  out_proj_.visit(join_name(prefix, "out_proj"), fn);
}

}  // namespace engine

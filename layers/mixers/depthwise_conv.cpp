#include "layers/mixers/depthwise_conv.h"

#include <cmath>

#include "engine/ops/conv/depthwise_conv1d.h"
#include "engine/ops/view/view.h"

namespace engine {

// PyTorch's Conv1d init: weight and bias uniform in +-1/sqrt(fan_in), and a
// depthwise filter's fan_in is its number of taps.
DepthwiseConv1d::DepthwiseConv1d(int64_t channels, int64_t taps, Rng& rng) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(taps));
  weight = Tensor::uniform({channels, 1, taps}, rng, -bound, bound);
  bias = Tensor::uniform({channels}, rng, -bound, bound);
}

namespace {
// PyTorch's weight layout [C, 1, K] as the ops take it, [C, K] (a view).
Tensor filters(const Tensor& weight) { return reshape(weight, {weight.size(0), weight.size(2)}); }
}  // namespace

Tensor DepthwiseConv1d::forward(const Tensor& x, int64_t pad_left, bool reverse) const {
  return depthwise_conv1d(x, filters(weight), bias, pad_left, reverse);
}

Tensor DepthwiseConv1d::forward_silu(const Tensor& x, int64_t pad_left, bool reverse) const {
  return depthwise_conv1d_silu(x, filters(weight), bias, pad_left, reverse);
}

void DepthwiseConv1d::visit(const std::string& prefix, const ParamVisitor& fn) {
  fn(join_name(prefix, "weight"), weight);
  fn(join_name(prefix, "bias"), bias);
}

}  // namespace engine

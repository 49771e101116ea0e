// A depthwise 1-D convolution over the token sequence (PyTorch's Conv1d with
// groups = channels), shared by the mamba and conv mixers. Parameters as in
// PyTorch: weight [C, 1, K], bias [C].
#pragma once
#include "layers/module.h"

namespace engine {

struct DepthwiseConv1d {
  Tensor weight, bias;

  DepthwiseConv1d() = default;
  DepthwiseConv1d(int64_t channels, int64_t taps, Rng& rng);  // PyTorch's default init
  int64_t taps() const { return weight.size(2); }
  // x [B, N, C] -> [B, N, C]; pad_left and reverse as in engine::depthwise_conv1d.
  Tensor forward(const Tensor& x, int64_t pad_left, bool reverse) const;
  // silu(forward(...)) in one kernel.
  Tensor forward_silu(const Tensor& x, int64_t pad_left, bool reverse) const;
  void visit(const std::string& prefix, const ParamVisitor& fn);
};

}  // namespace engine

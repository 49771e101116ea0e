// What every layer shares: parameters are plain Tensors held by the layer,
// enumerated by visit(prefix, fn) under checkpoint (timm) names, so loading,
// saving, optimisers and device moves all walk one list.
#pragma once
#include <functional>
#include <string>

#include "engine/random.h"
#include "engine/tensor.h"

namespace engine {

using ParamVisitor = std::function<void(const std::string& name, Tensor& param)>;

// Per-forward switches: training enables dropout / drop-path (drawing from rng).
// `active` carries A-ViT halting (models/avit.h): undefined, or [B, N] 0/1 in the
// activations' dtype, 0 = the token has halted. Attention then drops halted
// tokens as keys; the recurrent mixers (gated_rnn, mamba) make them identity
// steps of their scans; per-token and convolution mixers ignore it. A mixer's
// output at a halted token is discarded by the caller.
struct ForwardContext {
  bool training = false;
  Rng* rng = nullptr;
  Tensor active;
};

// join_name("blocks.3", "attn") is "blocks.3.attn"; an empty prefix adds nothing.
inline std::string join_name(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// Moves every parameter that `visit` enumerates to `device`, keeping names
// and requires_grad (each is a fresh leaf there).
void move_parameters(const std::function<void(const ParamVisitor&)>& visit, Device device);

// timm's default init for weights: normal(0, std) truncated to [-2 std, 2 std].
Tensor trunc_normal(const Shape& shape, Rng& rng, double stddev);

}  // namespace engine

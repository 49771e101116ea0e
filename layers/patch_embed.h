// Image -> patch tokens: a PxP, stride-P convolution, flattened to [B, N, D]
// in row-major patch order.
#pragma once
#include "layers/module.h"

namespace engine {

struct PatchEmbed {
  Tensor weight;  // [D, C, P, P]
  Tensor bias;    // [D]

  PatchEmbed() = default;
  PatchEmbed(int64_t in_chans, int64_t dim, int64_t patch, Rng& rng);
  Tensor forward(const Tensor& images) const;  // [B, C, H, W] -> [B, (H/P)(W/P), D]
  void visit(const std::string& prefix, const ParamVisitor& fn);
  int64_t patch_size() const { return weight.size(2); }
};

}  // namespace engine

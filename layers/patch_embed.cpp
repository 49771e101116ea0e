#include "layers/patch_embed.h"

#include <cmath>

#include "engine/ops/conv/patch_embed.h"
#include "engine/ops/view/view.h"

namespace engine {

// The weight as PyTorch's default Conv2d init, uniform in +-1/sqrt(fan_in);
// the bias zero.
PatchEmbed::PatchEmbed(int64_t in_chans, int64_t dim, int64_t patch, Rng& rng) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_chans * patch * patch));
  weight = Tensor::uniform({dim, in_chans, patch, patch}, rng, -bound, bound);
  bias = Tensor::zeros({dim});
}

Tensor PatchEmbed::forward(const Tensor& images) const {
  // patch_conv2d's NCHW result is a view of NHWC memory, so this permute is
  // contiguous and the reshape to tokens copies nothing.
  Tensor grid = permute(patch_conv2d(images, weight, bias), {0, 2, 3, 1});  // [B, H/P, W/P, D]
  return reshape(grid, {grid.size(0), grid.size(1) * grid.size(2), grid.size(3)});
}

void PatchEmbed::visit(const std::string& prefix, const ParamVisitor& fn) {
  fn(join_name(prefix, "proj.weight"), weight);
  fn(join_name(prefix, "proj.bias"), bias);
}

}  // namespace engine

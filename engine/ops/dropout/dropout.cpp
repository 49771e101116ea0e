// Dropout and drop-path: a random keep-mask (0 or 1 / (1 - p)) drawn on the
// host, then mul(), whose backward multiplies the gradient by the same mask.
#include "engine/ops/dropout/dropout.h"

#include <vector>

#include "engine/ops/elementwise/elementwise.h"

namespace engine {

namespace {

void check_probability(double p, const char* op) {
  check(p >= 0.0 && p < 1.0, "{}: drop probability {} is outside [0, 1)", op, p);
}

// A tensor of `shape` (x's dtype and device) whose elements are 0 with
// probability p and 1 / (1 - p) otherwise.
Tensor keep_mask(const Shape& shape, double p, Rng& rng, const Tensor& x) {
  std::vector<double> values(static_cast<size_t>(shape_numel(shape)));
  const double scale = 1.0 / (1.0 - p);
  for (double& v : values) v = rng.uniform() < p ? 0.0 : scale;
  return Tensor::from_vector(values, shape).to(x.dtype()).to(x.device());
}

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Rng& rng) {
  check_probability(p, "dropout");
  if (!training || p == 0.0) return x;
  return mul(x, keep_mask(x.shape(), p, rng, x));
}

Tensor drop_path(const Tensor& x, double p, bool training, Rng& rng) {
  check_probability(p, "drop_path");
  if (!training || p == 0.0) return x;
  check(x.dim() >= 1, "drop_path: needs a batch dimension, got {}", x);
  // One draw per sample, broadcast over the sample's other dimensions.
  Shape mask_shape(x.dim(), 1);
  mask_shape[0] = x.shape()[0];
  return mul(x, keep_mask(mask_shape, p, rng, x));
}

}  // namespace engine

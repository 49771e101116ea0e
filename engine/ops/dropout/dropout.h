// Stochastic regularisers, active only when `training` is true (identity otherwise).
#pragma once
#include "engine/random.h"
#include "engine/tensor.h"

namespace engine {

// Zeroes each element with probability p and scales survivors by 1 / (1 - p).
Tensor dropout(const Tensor& x, double p, bool training, Rng& rng);
// Stochastic depth: drops whole samples (dim 0) of a residual branch with
// probability p, scaling survivors by 1 / (1 - p) (timm's DropPath).
Tensor drop_path(const Tensor& x, double p, bool training, Rng& rng);

}  // namespace engine

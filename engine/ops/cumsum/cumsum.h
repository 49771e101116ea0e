// Inclusive cumulative sum along a dimension, with autograd.
#pragma once
#include "engine/tensor.h"

namespace engine {

Tensor cumsum(const Tensor& x, int64_t dim);

}  // namespace engine

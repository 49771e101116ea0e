// Layer normalisation over the last dimension, with autograd:
// y = (x - mean) / sqrt(var + eps) * weight + bias, var biased (as PyTorch).
#pragma once
#include "engine/tensor.h"

namespace engine {

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);

}  // namespace engine

// Layer normalisation over the last dimension, with autograd:
// y = (x - mean) / sqrt(var + eps) * weight + bias, var biased (as PyTorch).
#pragma once
#include "engine/tensor.h"

namespace engine {

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);

// The same, with y written as out_dtype: x's dtype, or bfloat16 for a float32
// x on a GPU (y only feeding bf16 GEMMs, which read that rounding anyway; see
// linear_operand_dtype). The gradient flowing back is float32 as x.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, DType out_dtype);

}  // namespace engine

// Layer normalisation over the last dimension, with autograd:
// y = (x - mean) / sqrt(var + eps) * weight + bias, var biased (as PyTorch).
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace engine {

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);

// The same, with y written as out_dtype: x's dtype, or bfloat16 for a float32
// x on a GPU (y only feeding bf16 GEMMs, which read that rounding anyway; see
// linear_operand_dtype). The gradient flowing back is float32 as x.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, DType out_dtype);

// {x, layer_norm(x, ...)} as one autograd node: x passed on (the same
// memory) next to its normalisation. A transformer block's residual stream
// feeds its norm and is added back after the branch; taken from here, its two
// gradients are summed by the norm's backward kernel in its own pass instead
// of by a kernel of their own.
std::vector<Tensor> layer_norm_passing_input(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                                             DType out_dtype);

}  // namespace engine

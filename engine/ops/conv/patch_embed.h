// Patch-embedding convolution (kernel size = stride = patch, no padding), as
// im2col + GEMM, with autograd.
#pragma once
#include "engine/tensor.h"

namespace engine {

// x [B, C, H, W], weight [D, C, P, P], bias [D] (optional) -> [B, D, H/P, W/P].
// H and W must be multiples of P.
Tensor patch_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias);

}  // namespace engine

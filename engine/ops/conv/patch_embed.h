// Patch-embedding convolution (kernel size = stride = patch, no padding), as
// im2col + GEMM, with autograd.
#pragma once
#include "engine/tensor.h"

namespace engine {

// x [B, C, H, W], weight [D, C, P, P], bias [D] (optional) -> [B, D, H/P, W/P].
// H and W must be multiples of P. The result is a view in NHWC memory order:
// permute(y, {0, 2, 3, 1}) gives the [B, H/P, W/P, D] patch tokens contiguous.
Tensor patch_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias);

}  // namespace engine

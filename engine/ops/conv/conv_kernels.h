// Kernels of the patch convolution: im2col and its adjoint col2im, for
// non-overlapping P x P patches (kernel size = stride = P).
#pragma once
#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

// x: contiguous [B, C, H, W] with H, W multiples of P. cols: contiguous
// [B * (H/P) * (W/P), C * P * P]; row (b, i, j) holds patch (i, j) of image b
// flattened in (c, ph, pw) order, the order of weight.reshape(D, C * P * P):
//   cols[(b * H/P + i) * W/P + j, (c * P + ph) * P + pw] = x[b, c, i * P + ph, j * P + pw].
using Im2ColKernel = void (*)(const Tensor& x, int64_t patch, const Tensor& cols);
// The adjoint: dx[b, c, i * P + ph, j * P + pw] += cols[...] with the same
// indexing. dx: contiguous, initialised by the caller (zeros for a gradient).
using Col2ImKernel = void (*)(const Tensor& cols, int64_t patch, const Tensor& dx);

extern KernelSlot<Im2ColKernel> im2col_kernel;
extern KernelSlot<Col2ImKernel> col2im_kernel;

}  // namespace engine

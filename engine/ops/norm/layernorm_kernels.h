// Kernels of layer normalisation. The autograd layer makes tensors contiguous
// and views x as [rows, cols], normalising each row.
#pragma once
#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

// x, y: [rows, cols]; weight, bias: [cols], or undefined (no affine part);
// mean, rstd: [rows], written for the backward (rstd = 1 / sqrt(var + eps)).
// All contiguous with x's dtype, except that the CUDA kernel also writes a
// bfloat16 y for a float32 x (the float32 result rounded to nearest even).
using LayerNormForwardKernel = void (*)(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                                        const Tensor& y, const Tensor& mean, const Tensor& rstd);
// With xhat = (x - mean) * rstd and g = dy * weight (dy without weight):
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) [+ dx_other]   per row
//   dweight = sum over rows of dy * xhat, dbias = sum over rows of dy.
// dx, dx_other: [rows, cols] (dx_other, x's gradient from its other consumers,
// may be undefined); dweight, dbias: [cols], each undefined when not wanted.
using LayerNormBackwardKernel = void (*)(const Tensor& x, const Tensor& weight, const Tensor& mean,
                                         const Tensor& rstd, const Tensor& dy, const Tensor& dx_other,
                                         const Tensor& dx, const Tensor& dweight, const Tensor& dbias);

extern KernelSlot<LayerNormForwardKernel> layer_norm_forward_kernel;
extern KernelSlot<LayerNormBackwardKernel> layer_norm_backward_kernel;

}  // namespace engine

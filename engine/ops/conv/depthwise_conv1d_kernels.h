// Kernels of the depthwise convolution along a sequence. The autograd layer
// (depthwise_conv1d.cpp) hands them [batch, length, channels] tensors and
// allocates every output; `reverse` convolves the sequence from t = length - 1
// down to 0 (SequenceOrder).
#pragma once
#include "engine/dispatch.h"
#include "engine/ops/scan/sequence.h"
#include "engine/tensor.h"

namespace engine {

// In scan order (step k <-> time at(k)): y_k = bias + sum_j w[c, j] x_{k + j - pad_left}, zero
// outside the sequence. x, y [B, L, C]; weight [C, K]; bias [C] or undefined.
// With silu, y is silu of that, and pre ([B, L, C] or undefined) receives the
// convolution itself (SiLU's input, for a backward).
using DepthwiseConv1dKernel = void (*)(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& y,
                                       int64_t pad_left, bool reverse, bool silu, const Tensor& pre);
// Writes dx [B, L, C], dweight [C, K] and dbias [C] (dbias may be undefined).
using DepthwiseConv1dBackwardKernel = void (*)(const Tensor& x, const Tensor& weight, const Tensor& dy,
                                               const Tensor& dx, const Tensor& dweight, const Tensor& dbias,
                                               int64_t pad_left, bool reverse);

extern KernelSlot<DepthwiseConv1dKernel> depthwise_conv1d_kernel;
extern KernelSlot<DepthwiseConv1dBackwardKernel> depthwise_conv1d_backward_kernel;

}  // namespace engine

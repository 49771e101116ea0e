// Kernels of softplus_linear (engine/ops/softplus_linear/softplus_linear.h).
#pragma once
#include <cmath>

#include "engine/dispatch.h"
#include "engine/ops/elementwise/elementwise_math.h"
#include "engine/tensor.h"

namespace engine {

// y [M, N] = softplus(x [M, K] @ weight [N, K]^T + bias [N]), each output's
// pre-activation summed as bias, then k = 0, 1, ... in order. x's rows are K
// contiguous elements at any stride x.strides()[0] >= 0 (read in place); weight,
// bias and y are contiguous; bias may be undefined (zero). One dtype, float32
// or float64; M, N > 0 and 1 <= K <= kSoftplusLinearMaxInputs.
using SoftplusLinearKernel = void (*)(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& y);
// The backward's first step: d_pre = dy * softplus'(pre), from the forward's
// output y (softplus_math::derivative_from_output). All contiguous, one shape and dtype.
using SoftplusGradKernel = void (*)(const Tensor& y, const Tensor& dy, const Tensor& d_pre);

extern KernelSlot<SoftplusLinearKernel> softplus_linear_kernel;
extern KernelSlot<SoftplusGradKernel> softplus_grad_kernel;

namespace softplus_math {

using std::expm1;

// softplus'(pre) = sigmoid(pre) = 1 - exp(-y) for y = softplus(pre), as
// -expm1(-y), which stays exact for the tiny y of very negative pre. (Past
// softplus's threshold, y = pre and this is 1 - exp(-pre): sigmoid to within
// exp(-40).)
template <typename T>
ENGINE_HOST_DEVICE T derivative_from_output(T y) {
  return -expm1(-y);
}

}  // namespace softplus_math

}  // namespace engine

// Kernels of the optimizer family: one fused update per parameter tensor (so a
// CUDA backend can do each step in a single pass over memory), plus the sum of
// squares and in-place scaling used by gradient clipping. Every tensor is
// contiguous; the tensors of one call share shape, dtype (F32 or F64) and device.
#pragma once
#include <cstdint>

#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

// In place, for step >= 1:
//   p *= 1 - lr * weight_decay;  m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
//   p -= lr * (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps).
using AdamWStepKernel = void (*)(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                                 const Tensor& exp_avg_sq, double lr, double beta1, double beta2,
                                 double eps, double weight_decay, int64_t step);

// In place: d = g + weight_decay p; with momentum != 0, buf = first_step ? d : momentum buf + d
// and d = nesterov ? d + momentum buf : buf (momentum_buffer is undefined when momentum == 0);
// then p -= lr d. The grad itself is left unchanged.
using SgdStepKernel = void (*)(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer,
                               double lr, double momentum, bool nesterov, double weight_decay,
                               bool first_step);

// Sum of x^2 over all elements, accumulated in double.
using SumOfSquaresKernel = double (*)(const Tensor& x);

// x *= factor, in place.
using ScaleKernel = void (*)(const Tensor& x, double factor);

extern KernelSlot<AdamWStepKernel> adamw_step_kernel;
extern KernelSlot<SgdStepKernel> sgd_step_kernel;
extern KernelSlot<SumOfSquaresKernel> sum_of_squares_kernel;
extern KernelSlot<ScaleKernel> scale_kernel;

}  // namespace engine

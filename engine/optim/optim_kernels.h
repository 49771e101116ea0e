// Kernels of the optimizer family: fused updates (one pass over memory per
// step), plus the sum of squares and in-place scaling used by gradient
// clipping. AdamW and the clipping kernels take every tensor of a step at once
// (multi-tensor: on a GPU one launch for all parameters instead of one per
// tensor, and one device-to-host copy for the global norm). Every tensor is
// contiguous and of dtype F32 or F64; the tensors of one call share dtype and
// device, and the tensors of one parameter its shape.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

// One parameter's part of an AdamW step, with its group's lr and weight decay.
struct AdamWParam {
  Tensor param, grad, exp_avg, exp_avg_sq;
  double lr = 0.0, weight_decay = 0.0;
};

// In place, for each parameter, for step >= 1:
//   p *= 1 - lr * weight_decay;  m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
//   p -= lr * (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps).
using AdamWStepKernel = void (*)(const std::vector<AdamWParam>& params, double beta1, double beta2, double eps,
                                 int64_t step);

// In place: d = g + weight_decay p; with momentum != 0, buf = first_step ? d : momentum buf + d
// and d = nesterov ? d + momentum buf : buf (momentum_buffer is undefined when momentum == 0);
// then p -= lr d. The grad itself is left unchanged.
using SgdStepKernel = void (*)(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer,
                               double lr, double momentum, bool nesterov, double weight_decay,
                               bool first_step);

// Sum of x^2 over all elements of all tensors, accumulated in double in an
// order fixed by the shapes (the same result on every run).
using SumOfSquaresKernel = double (*)(const std::vector<Tensor>& xs);

// x *= factor, in place, for every tensor.
using ScaleKernel = void (*)(const std::vector<Tensor>& xs, double factor);

extern KernelSlot<AdamWStepKernel> adamw_step_kernel;
extern KernelSlot<SgdStepKernel> sgd_step_kernel;
extern KernelSlot<SumOfSquaresKernel> sum_of_squares_kernel;
extern KernelSlot<ScaleKernel> scale_kernel;

}  // namespace engine

// Kernels of halting_step (halting.h). x [T, D] with unit column stride (its
// rows at stride x.stride(0)); the [T] tensors contiguous; all one dtype.
#pragma once
#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

using HaltingStepKernel = void (*)(const Tensor& x, const Tensor& can_halt, const Tensor& cumulative,
                                   const Tensor& active, const Tensor& cumulative_out, const Tensor& active_out,
                                   double gamma, double beta, double eps);

extern KernelSlot<HaltingStepKernel> halting_step_kernel;

}  // namespace engine

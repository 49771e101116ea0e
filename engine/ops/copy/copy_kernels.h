// Kernels of the copy family: strided copy with dtype conversion, and fill.
#pragma once
#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

// dst (any strides, same shape and device) <- src (any strides, any dtype).
using CopyKernel = void (*)(const Tensor& src, const Tensor& dst);
// Every element of the contiguous dst set to value.
using FillKernel = void (*)(const Tensor& dst, double value);

extern KernelSlot<CopyKernel> copy_kernel;
extern KernelSlot<FillKernel> fill_kernel;

}  // namespace engine

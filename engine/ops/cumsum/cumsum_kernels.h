// Kernels of cumsum. The autograd layer makes tensors contiguous and views
// them as [outer, length, inner], with the scanned dimension in the middle.
#pragma once
#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

// x, out: [outer, length, inner] contiguous, same dtype. Inclusive scan along
// length: out[o, i, j] = sum over k <= i of x[o, k, j]; reverse sums k >= i
// instead (the backward of a forward scan).
using CumsumKernel = void (*)(const Tensor& x, const Tensor& out, bool reverse);

extern KernelSlot<CumsumKernel> cumsum_kernel;

}  // namespace engine

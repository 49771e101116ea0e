// Kernels of the softmax family. The autograd layer makes tensors contiguous
// and views them as [rows, cols], so kernels normalise each row.
#pragma once
#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

enum class SoftmaxKind { Softmax, LogSoftmax };

// x, y: [rows, cols] contiguous, same dtype.
using SoftmaxForwardKernel = void (*)(SoftmaxKind kind, const Tensor& x, const Tensor& y);
// Given the forward output y and dy, all [rows, cols] contiguous:
//   softmax:     dx = y * (dy - sum(dy * y))
//   log_softmax: dx = dy - exp(y) * sum(dy)
using SoftmaxBackwardKernel = void (*)(SoftmaxKind kind, const Tensor& y, const Tensor& dy, const Tensor& dx);

extern KernelSlot<SoftmaxForwardKernel> softmax_forward_kernel;
extern KernelSlot<SoftmaxBackwardKernel> softmax_backward_kernel;

}  // namespace engine

// Kernels of the loss family: fused softmax cross-entropy with hard labels.
// The other losses are compositions of existing ops.
#pragma once
#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

// logits: [rows, classes] contiguous; labels: int64 [rows], already checked to
// lie in [0, classes); s: label smoothing. Per row, with lse = logsumexp(x):
//   losses[r] = lse - (1 - s) x[label] - s mean_c(x)
// and lse[r] is saved for the backward. losses and lse: [rows], logits' dtype.
using CrossEntropyForwardKernel = void (*)(const Tensor& logits, const Tensor& labels, double smoothing,
                                           const Tensor& losses, const Tensor& lse);
// dlogits[r, c] = dlosses[r] * (exp(x[r, c] - lse[r]) - (1 - s) [c == label[r]] - s / classes)
using CrossEntropyBackwardKernel = void (*)(const Tensor& logits, const Tensor& labels, double smoothing,
                                            const Tensor& lse, const Tensor& dlosses, const Tensor& dlogits);

extern KernelSlot<CrossEntropyForwardKernel> cross_entropy_forward_kernel;
extern KernelSlot<CrossEntropyBackwardKernel> cross_entropy_backward_kernel;

}  // namespace engine

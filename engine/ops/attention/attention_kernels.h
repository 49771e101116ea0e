// Kernels of the attention family. The autograd layer hands them contiguous
// tensors and allocates every output; the kernels only compute.
#pragma once
#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

// q, k, v: [B, H, N, d], one dtype. key_active: undefined (every key), or
// float32 [B, N] with 0 = the key is dropped (its score is -inf). scores are
// scale * q . k.
struct AttentionInputs {
  Tensor q, k, v, key_active;
  double scale = 1.0;
};

// Writes out [B, H, N, d] and lse [B, H, N] (in the inputs' dtype): the
// natural log of sum_j exp(score_ij) over the active keys, -inf (with an
// output row of zeros) when a row has none.
using AttentionForwardKernel = void (*)(const AttentionInputs& in, const Tensor& out, const Tensor& lse);

// Given the forward's out and lse and dout = dL/dout (all contiguous), writes
// dq, dk, dv ([B, H, N, d], every element) with P_ij = exp(score_ij - lse_i):
//   dv = P^T dout,  dP = dout v^T,  dS = P * (dP - rowsum(dout * out)),
//   dq = scale dS k,  dk = scale dS^T q.
// Deterministic: no atomics, a fixed order of summation.
using AttentionBackwardKernel = void (*)(const AttentionInputs& in, const Tensor& out, const Tensor& lse,
                                         const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv);

extern KernelSlot<AttentionForwardKernel> attention_forward_kernel;
extern KernelSlot<AttentionBackwardKernel> attention_backward_kernel;

}  // namespace engine

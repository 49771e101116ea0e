// Kernels of the attention family. The autograd layer allocates every output
// and hands the kernels views; the kernels only compute.
#pragma once
#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

// Every [B, H, N, d] operand of the kernels (q, k, v, out, dout, dq, dk, dv)
// is a view, contiguous along d and otherwise of any strides: element
// (b, h, i, e) is data[b * batch + h * head + i * token + e]. So one set of
// kernels serves both layouts of the ops (attention.h):
//   fused_attention          [B, H, N, d] tensors (contiguous: N d, d, ... )
//   fused_attention_packed   q, k, v of head h at columns j D + h d
//                            (j = 0, 1, 2) of qkv and d(qkv) [B, N, 3D]:
//                            strides (3 N D, d, 3 D); out and dout at columns
//                            h d of [B, N, D]: strides (N D, d, D).
template <typename T>
struct HeadsView {
  T* data;                      // element (0, 0, 0, 0)
  int64_t batch, head, token;  // element strides; d has stride 1

  // The [N, d] rows of (b, h), row stride `token` (constexpr: callable from
  // device code too, under nvcc's --expt-relaxed-constexpr).
  constexpr T* rows(int64_t b, int64_t h) const { return data + b * batch + h * head; }
};

// t as a HeadsView: t is [B, H, N, d] with stride 1 along d (checked).
template <typename T>
HeadsView<T> heads_view(const Tensor& t) {
  check(t.dim() == 4 && (t.size(3) == 1 || t.strides()[3] == 1),
        "fused_attention kernels: an operand must be [B, H, N, d] with d contiguous, got {} with strides {}",
        t, ShapeText{t.strides()});
  return {static_cast<T*>(t.raw_data()), t.strides()[0], t.strides()[1], t.strides()[2]};
}

// q, k, v: [B, H, N, d] views of one dtype. key_active: undefined (every key),
// or contiguous float32 [B, N] with 0 = the key is dropped (its score is
// -inf). scores are scale * q . k.
struct AttentionInputs {
  Tensor q, k, v, key_active;
  double scale = 1.0;
};

// Writes every element of the view out [B, H, N, d] (nothing outside it) and
// of lse [B, H, N] (contiguous, in the inputs' dtype): the natural log of
// sum_j exp(score_ij) over the active keys, -inf (with an output row of
// zeros) when a row has none.
using AttentionForwardKernel = void (*)(const AttentionInputs& in, const Tensor& out, const Tensor& lse);

// Given the forward's out (a view) and lse and dout = dL/dout (a view), writes
// every element of the views dq, dk, dv ([B, H, N, d], disjoint: they may be
// column blocks of one d(qkv)) with P_ij = exp(score_ij - lse_i):
//   dv = P^T dout,  dP = dout v^T,  dS = P * (dP - rowsum(dout * out)),
//   dq = scale dS k,  dk = scale dS^T q.
// Deterministic: no atomics, a fixed order of summation.
using AttentionBackwardKernel = void (*)(const AttentionInputs& in, const Tensor& out, const Tensor& lse,
                                         const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv);

extern KernelSlot<AttentionForwardKernel> attention_forward_kernel;
extern KernelSlot<AttentionBackwardKernel> attention_backward_kernel;

}  // namespace engine

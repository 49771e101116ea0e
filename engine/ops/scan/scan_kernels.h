// Kernels of the linear recurrences: linear_scan and gated_scan. The autograd
// layer (scan.cpp) hands them tensors laid out as [batch, length, channels]
// (the sequence in the middle) and allocates every output. `reverse` runs the
// sequence from t = length - 1 down to 0 (SequenceOrder), so one kernel serves
// both directions.
#pragma once
#include "engine/dispatch.h"
#include "engine/ops/elementwise/elementwise_math.h"
#include "engine/ops/scan/sequence.h"
#include "engine/tensor.h"

namespace engine {

// ---- linear_scan: h_t = a_t * h_prev + b_t (h before the first step = 0) ----
// a, b, h: [B, L, C], same dtype.
using LinearScanKernel = void (*)(const Tensor& a, const Tensor& b, const Tensor& h, bool reverse);
// Given a, the forward output h and g = dL/dh, writes da and db ([B, L, C]):
// dh_t = g_t + a_next * dh_next (the recurrence run the other way),
// db_t = dh_t, da_t = dh_t * h_prev.
using LinearScanBackwardKernel = void (*)(const Tensor& a, const Tensor& h, const Tensor& g, const Tensor& da,
                                          const Tensor& db, bool reverse);

// ---- gated_scan: the gated_rnn mixer's recurrence, its gate computed inside ----
// In scan order, with s_k = sigmoid(gate_k) and keep_k (1 where keep is undefined):
//   w_k = (1 - s_k) keep_k,   a_k = 1 - w_k (s_k where keep is undefined),
//   h_k = a_k h_{k-1} + w_k u_k   (h before the first step = 0)
// u, gate [B, L, C]: rows of C contiguous elements at one stride r >= C for
// both (strides [L r, r, 1], e.g. slices of the mixer's in_proj output, read
// in place); keep [B, L] (a halting mask: 0 makes the step the identity) or
// undefined.
struct GatedScanInputs {
  Tensor u, gate, keep;
  int64_t row_stride() const { return u.strides()[1]; }  // r, for u and gate
};
// Writes h [B, L, C] (contiguous).
using GatedScanKernel = void (*)(const GatedScanInputs& in, const Tensor& h, bool reverse);
// Given h (the forward's output) and g = dL/dh, writes du and dgate ([B, L, C],
// contiguous): dh_k = g_k + a_{k+1} dh_{k+1}, du_k = dh_k w_k and
// dgate_k = dh_k (h_{k-1} - u_k) keep_k s_k (1 - s_k).
using GatedScanBackwardKernel = void (*)(const GatedScanInputs& in, const Tensor& h, const Tensor& g,
                                         const Tensor& du, const Tensor& dgate, bool reverse);

// sigmoid as gated_scan computes it. On the GPU, float uses the hardware's
// exponential and division (MUFU.EX2 and MUFU.RCP, relative error ~1e-6
// against the CPU's exact formula): the accurate expf and IEEE division take
// ~30 instructions per element and made the scan instruction-bound (H200,
// [256, 65, 96]: forward 0.0181 -> 0.0104 ms, backward 0.0273 -> 0.0175 ms).
template <typename T>
ENGINE_HOST_DEVICE T gate_sigmoid(T x) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<T, float>) {
    return __fdividef(1.f, 1.f + __expf(-x));
  } else {
    return elementwise_math::sigmoid(x);
  }
#else
  return elementwise_math::sigmoid(x);
#endif
}

// One step's gate: s = sigmoid(gate), the input weight w and the coefficient
// a of the state.
template <typename T>
struct StepGate {
  T s, w, a;
};
template <typename T>
ENGINE_HOST_DEVICE StepGate<T> step_gate(T gate, T keep, bool has_keep) {
  const T s = gate_sigmoid(gate), w = (T(1) - s) * keep;
  return {s, w, has_keep ? T(1) - w : s};
}

extern KernelSlot<LinearScanKernel> linear_scan_kernel;
extern KernelSlot<LinearScanBackwardKernel> linear_scan_backward_kernel;
extern KernelSlot<GatedScanKernel> gated_scan_kernel;
extern KernelSlot<GatedScanBackwardKernel> gated_scan_backward_kernel;

}  // namespace engine

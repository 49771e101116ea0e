// Kernels of the scan family. The autograd layer hands them contiguous
// tensors laid out as [batch, length, channels] (the sequence in the middle)
// and allocates every output. `reverse` runs the sequence from t = length - 1
// down to 0: the kernels index time through SequenceOrder, so one kernel
// serves both directions.
#pragma once
#include "engine/dispatch.h"
#include "engine/ops/elementwise/elementwise_math.h"
#include "engine/tensor.h"

namespace engine {

// Step k of a scan visits time t = at(k).
struct SequenceOrder {
  int64_t length;
  bool reverse;
  int64_t at(int64_t step) const { return reverse ? length - 1 - step : step; }
};

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

// ---- selective_scan (Mamba's S6), per batch b and channel c ----
//   h_t[s] = exp(dt_t A[s]) h_prev[s] + dt_t Bm_t[s] x_t,   y_t = sum_s Cm_t[s] h_t[s] + D x_t
// Shapes: x, dt [B, L, C]; A [C, S]; Bm, Cm [B, L, S]; D [C]; all one dtype.
// All contiguous, except that the rows of Bm and Cm (S contiguous elements
// each) may be further apart than S, by the same stride for both: Bm.strides()
// = Cm.strides() = [L r, r, 1] (views of x_proj's wider output, read in place).
// With a_is_log, the tensor A holds Mamba's A_log and the scan's A is
// -exp(A_log), computed by the kernels as they load it; the gradient dA is
// then dL/dA_log = dL/dA * A.
struct SelectiveScanInputs {
  Tensor x, dt, A, Bm, Cm, D;
  bool a_is_log = false;
  int64_t row_stride() const { return Bm.strides()[1]; }  // r, for Bm and Cm
};
// The gradients, shaped like the inputs of the same name.
struct SelectiveScanGrads {
  Tensor dx, ddt, dA, dBm, dCm, dD;
};
// Writes y [B, L, C]; the states h never leave the kernel whole. With
// save_states (a forward whose backward will run) it returns what the
// backward restarts its recomputation from, in the kernel's own layout (the
// CUDA kernel: the state entering every tile of steps, 1/8 of all states);
// an undefined tensor where a kernel saves nothing.
using SelectiveScanKernel = Tensor (*)(const SelectiveScanInputs& in, const Tensor& y, bool save_states,
                                       bool reverse);
// Recomputes the states from the inputs, from `saved` (what the forward
// returned) or from scratch where that is undefined, and writes every
// gradient. Reductions over batch and channels must be deterministic
// (independent of the thread count).
using SelectiveScanBackwardKernel = void (*)(const SelectiveScanInputs& in, const Tensor& saved, const Tensor& dy,
                                             const SelectiveScanGrads& grads, bool reverse);

// ---- depthwise_conv1d along the sequence ----
// In scan order (step k <-> time at(k)): y_k = bias + sum_j w[c, j] x_{k + j - pad_left}, zero
// outside the sequence. x, y [B, L, C]; weight [C, K]; bias [C] or undefined.
// With silu, y is silu of that, and pre ([B, L, C] or undefined) receives the
// convolution itself (SiLU's input, for a backward).
using DepthwiseConv1dKernel = void (*)(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& y,
                                       int64_t pad_left, bool reverse, bool silu, const Tensor& pre);
// Writes dx [B, L, C], dweight [C, K] and dbias [C] (dbias may be undefined).
using DepthwiseConv1dBackwardKernel = void (*)(const Tensor& x, const Tensor& weight, const Tensor& dy,
                                               const Tensor& dx, const Tensor& dweight, const Tensor& dbias,
                                               int64_t pad_left, bool reverse);

extern KernelSlot<LinearScanKernel> linear_scan_kernel;
extern KernelSlot<LinearScanBackwardKernel> linear_scan_backward_kernel;
extern KernelSlot<GatedScanKernel> gated_scan_kernel;
extern KernelSlot<GatedScanBackwardKernel> gated_scan_backward_kernel;
extern KernelSlot<SelectiveScanKernel> selective_scan_kernel;
extern KernelSlot<SelectiveScanBackwardKernel> selective_scan_backward_kernel;
extern KernelSlot<DepthwiseConv1dKernel> depthwise_conv1d_kernel;
extern KernelSlot<DepthwiseConv1dBackwardKernel> depthwise_conv1d_backward_kernel;

}  // namespace engine

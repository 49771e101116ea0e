// Kernels of Mamba's selective scan (S6). The autograd layer
// (selective_scan.cpp) hands them [batch, length, channels] tensors and
// allocates every output; `reverse` runs the sequence from t = length - 1 down
// to 0 (SequenceOrder).
#pragma once
#include "engine/dispatch.h"
#include "engine/ops/scan/sequence.h"
#include "engine/tensor.h"

namespace engine {

// Per batch b and channel c:
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

extern KernelSlot<SelectiveScanKernel> selective_scan_kernel;
extern KernelSlot<SelectiveScanBackwardKernel> selective_scan_backward_kernel;

}  // namespace engine

// What the sequence ops share: linear_scan and gated_scan (scan.h),
// selective_scan (selective_scan.h) and depthwise_conv1d
// (engine/ops/conv/depthwise_conv1d.h). Sequences are [B, L, C]: batch,
// length (tokens), channels. Here: the order in which a scan visits time, the
// ops' argument checks and the inputs as their kernels read them
// (sequence_cpu.h: how their CPU references split the work; sequence_cuda.cuh:
// what their CUDA kernels share).
#pragma once
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace engine {

// Step k of a scan visits time t = at(k): `reverse` runs the sequence from
// t = length - 1 down to 0, so one kernel serves both directions.
struct SequenceOrder {
  int64_t length;
  bool reverse;
  int64_t at(int64_t step) const { return reverse ? length - 1 - step : step; }
};

namespace sequence {

// ---------------------------------------------------------------- the ops' checks and inputs

// What the kernels read: a contiguous tensor without history, whose size-1
// dims have the strides the kernels assume (a sequence of length 1 from
// unsqueeze has an arbitrary row stride).
inline Tensor kernel_input(const Tensor& t) {
  return t.defined() ? with_canonical_unit_strides(t.detach().contiguous()) : Tensor();
}

// Two [B, L, N] inputs as the kernels read them: in place when both are rows
// of N contiguous elements at one stride r >= N (strides [L r, r, 1], e.g.
// slices of one projection's output, which would otherwise be copied at every
// call), else contiguous copies. The selective scan's Bm and Cm, gated_scan's
// u and gate.
inline std::pair<Tensor, Tensor> shared_rows(const Tensor& first, const Tensor& second) {
  auto uniform_rows = [](const Tensor& t) {
    const Shape& st = t.strides();
    return st[2] == 1 && st[1] >= t.size(2) && st[0] == t.size(1) * st[1];
  };
  if (uniform_rows(first) && uniform_rows(second) && first.strides() == second.strides()) {
    return {first.detach(), second.detach()};
  }
  return {kernel_input(first), kernel_input(second)};
}

inline void check_sequence(const char* op, const char* what, const Tensor& t) {
  check(t.dim() == 3, "{}: {} must be [B, L, C], got {}", op, what, t);
}

inline void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected) {
  check(t.shape() == expected, "{}: {} must be {}, got {}", op, what, ShapeText{expected}, t);
}

// Every defined tensor shares the first one's dtype and device.
inline void check_alike(const char* op, const std::vector<Tensor>& tensors) {
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    check(t.dtype() == tensors[0].dtype() && t.device() == tensors[0].device(), "{}: inputs {} and {} differ", op,
          tensors[0], t);
  }
}

}  // namespace sequence

}  // namespace engine

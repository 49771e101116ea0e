// Kernels of attention_row_stat_sums (engine/ops/attention_stats/attention_stats.h).
#pragma once
#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

// probs: float32 [B, H, N, N] contiguous; keep: uint8 [B, N] contiguous on the
// same device, or undefined; cls_token in [-1, N); sums: float64
// [B, H, 2, kRowStats] contiguous, written whole.
using RowStatSumsKernel = void (*)(const Tensor& probs, const Tensor& keep, int64_t cls_token, const Tensor& sums);

extern KernelSlot<RowStatSumsKernel> row_stat_sums_kernel;

}  // namespace engine

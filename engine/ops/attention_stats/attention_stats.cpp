// attention_row_stat_sums: checks, then the device's kernel.
#include "engine/ops/attention_stats/attention_stats.h"

#include <algorithm>

#include "engine/ops/attention_stats/attention_stats_kernels.h"

namespace engine {

Tensor attention_row_stat_sums(const Tensor& probs, const Tensor& keep_mask, int64_t cls_token) {
  check(probs.dim() == 4 && probs.size(2) == probs.size(3),
        "attention_row_stat_sums: probabilities must be [B, H, N, N], got {}", probs);
  check(is_floating(probs.dtype()), "attention_row_stat_sums: probabilities must be floating point, got {}",
        dtype_name(probs.dtype()));
  const int64_t batch = probs.size(0), heads = probs.size(1), tokens = probs.size(2);
  check(cls_token >= -1 && cls_token < std::max<int64_t>(tokens, 1),
        "attention_row_stat_sums: class token {} is out of range for {} tokens", cls_token, tokens);
  check(!keep_mask.defined() || (keep_mask.dtype() == DType::U8 && keep_mask.shape() == Shape{batch, tokens}),
        "attention_row_stat_sums: the keep mask must be uint8 [{}, {}] (images, tokens), got {}", batch, tokens,
        keep_mask);
  // Rows longer than the CUDA kernel sorts in a warp go to the CPU kernel.
  if (probs.device().is_cuda() && tokens > kRowStatsMaxTokensCuda) {
    return attention_row_stat_sums(probs.to(Device::cpu()), keep_mask, cls_token).to(probs.device());
  }
  const Shape shape{batch, heads, 2, kRowStats};
  if (batch * heads * tokens == 0) return Tensor::zeros(shape, DType::F64, probs.device());
  const Tensor keep = keep_mask.defined() ? keep_mask.to(probs.device()).contiguous() : Tensor();
  Tensor sums = Tensor::empty(shape, DType::F64, probs.device());
  const Tensor rows = probs.detach().to(DType::F32).contiguous();
  row_stat_sums_kernel.get(probs.device())(rows, keep, cls_token, sums);
  return sums;
}

}  // namespace engine

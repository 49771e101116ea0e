// Fused multi-head attention: softmax(scale * q k^T, keys masked) v computed
// tile by tile with an online softmax, so the [N, N] probabilities never reach
// memory (the backward recomputes them from q, k and the saved log-sum-exp).
#pragma once
#include "engine/tensor.h"

namespace engine {

// q, k, v [B, H, N, d] (any strides) -> [B, H, N, d]:
//   out[b, h, i] = sum_j softmax_j(scale * q[b, h, i] . k[b, h, j]) v[b, h, j]
// over the keys j with key_active[b, j] != 0 (key_active: undefined = every
// key, or [B, N] of any dtype). A row without any active key gives zeros (and
// no gradient). Differentiable in q, k and v; float32 and float64 on the CPU,
// float32 with head_dim 32 or 64 on CUDA.
Tensor fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                       const Tensor& key_active = Tensor());

// Whether fused_attention has a kernel for q's device and dtype at this head
// dimension (callers with another path fall back to it when not).
bool fused_attention_supported(Device device, DType dtype, int64_t head_dim);

}  // namespace engine

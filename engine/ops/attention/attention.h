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
// float32 with head_dim 32 or 64 on CUDA (in bf16 mode, gemm_precision(),
// computed on the tensor cores from bf16-rounded q, k, v and dout, with
// float32 accumulation and float32 results).
Tensor fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                       const Tensor& key_active = Tensor());

// The same straight from a fused q, k, v projection, in timm's layout:
// qkv [B, N, 3 D] with D = heads * d holds q (j = 0), k (j = 1) and v (j = 2)
// of head h, element e, at column j D + h d + e. Returns the context
// token-major, [B, N, D] (contiguous, head h at columns h d ... h d + d - 1),
// ready for the output projection:
//   fused_attention_packed(qkv, H, s, m) ==
//     reshape(transpose(fused_attention(q, k, v, s, m), 1, 2), {B, N, D})
// with q, k, v = select(permute(reshape(qkv, {B, N, 3, H, d}), {2, 0, 3, 1, 4}), 0, j),
// but without any of those copies: the kernels read q, k and v in place and
// write out token-major, and the backward writes d(qkv) [B, N, 3 D] directly
// (one gradient, no scatter). Same dtypes and devices as fused_attention
// (fused_attention_supported at head_dim d).
Tensor fused_attention_packed(const Tensor& qkv, int64_t heads, double scale, const Tensor& key_active = Tensor());

// Whether fused_attention (and fused_attention_packed) has a kernel for q's
// device and dtype at this head dimension (callers with another path fall
// back to it when not).
bool fused_attention_supported(Device device, DType dtype, int64_t head_dim);

}  // namespace engine

#include "layers/attention.h"

#include <cmath>

#include "engine/ops/elementwise/elementwise.h"
#include "engine/ops/matmul/matmul.h"
#include "engine/ops/softmax/softmax.h"
#include "engine/ops/view/view.h"

namespace engine {

Attention::Attention(int64_t dim, int64_t heads, bool qkv_bias, Rng& rng)
    : heads_(heads), qkv_(dim, 3 * dim, qkv_bias, rng), proj_(dim, dim, true, rng) {
  check(heads > 0 && dim % heads == 0, "attention: dim {} is not divisible by {} heads", dim, heads);
}

Tensor Attention::forward(const Tensor& x, const ForwardContext&, Tensor* attn_probs) {
  const int64_t batch = x.size(0), tokens = x.size(1), dim = x.size(2);
  const int64_t head_dim = dim / heads_;
  // [B, N, 3D] -> [3, B, H, N, d]: q, k, v for every head. One copy here makes
  // q, k and v contiguous, so both GEMMs below read them in place (k as a
  // transposed operand).
  Tensor qkv =
      permute(reshape(qkv_.forward(x), {batch, tokens, 3, heads_, head_dim}), {2, 0, 3, 1, 4}).contiguous();
  Tensor q = mul(select(qkv, 0, 0), 1.0 / std::sqrt(static_cast<double>(head_dim)));
  Tensor k = select(qkv, 0, 1);
  Tensor v = select(qkv, 0, 2);
  Tensor probs = softmax(matmul(q, transpose(k, -2, -1)));  // [B, H, N, N]
  if (attn_probs) *attn_probs = probs;
  Tensor context = matmul(probs, v);                           // [B, H, N, d]
  return proj_.forward(reshape(transpose(context, 1, 2), {batch, tokens, dim}));
}

void Attention::visit(const std::string& prefix, const ParamVisitor& fn) {
  qkv_.visit(join_name(prefix, "qkv"), fn);
  proj_.visit(join_name(prefix, "proj"), fn);
}

}  // namespace engine

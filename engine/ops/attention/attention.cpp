// fused_attention and fused_attention_packed: argument checks, the forward
// through the kernels, and the backward beside it (recomputing the
// probabilities from q, k and the saved log-sum-exp instead of keeping them).
// Both hand the same kernels [B, H, N, d] views (attention_kernels.h): the
// packed op's are views into qkv, its output and d(qkv).
#include "engine/ops/attention/attention.h"

#include <cmath>

#include "engine/autograd.h"
#include "engine/ops/attention/attention_kernels.h"
#include "engine/ops/matmul/matmul_kernels.h"
#include "engine/ops/view/view.h"

namespace engine {

namespace {

constexpr const char* kOp = "fused_attention";
constexpr const char* kPackedOp = "fused_attention_packed";

// What the kernels read: a view without history, contiguous along d (the
// kernels take any other strides), copied only when it is not.
Tensor kernel_input(const Tensor& t) {
  Tensor x = t.detach();
  return x.size(-1) == 1 || x.strides().back() == 1 ? x : x.contiguous();
}

// The mask as the kernels read it: float32 (any value but 0 keeps the key), contiguous.
Tensor kernel_mask(const Tensor& key_active) {
  return key_active.defined() ? key_active.detach().to(DType::F32).contiguous() : Tensor();
}

// Part j's heads of a token-major [B, N, parts * H * d] tensor as the
// kernels' [B, H, N, d] view (no copy): columns j H d + h d + e.
Tensor heads_of(const Tensor& tokens, int64_t parts, int64_t part, int64_t heads) {
  const int64_t batch = tokens.size(0), n = tokens.size(1), d = tokens.size(2) / (parts * heads);
  return select(permute(reshape(tokens, {batch, n, parts, heads, d}), {2, 0, 3, 1, 4}), 0, part);
}

void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, double scale, const Tensor& key_active) {
  check(q.defined() && k.defined() && v.defined(), "{}: q, k and v must all be defined", kOp);
  check(q.dim() == 4 && q.shape() == k.shape() && q.shape() == v.shape(),
        "{}: q, k and v must be [B, H, N, d] of one shape, got q {}, k {}, v {}", kOp, ShapeText{q.shape()},
        ShapeText{k.shape()}, ShapeText{v.shape()});
  check(q.dtype() == k.dtype() && q.dtype() == v.dtype() && q.device() == k.device() && q.device() == v.device(),
        "{}: q, k and v must share a dtype and a device, got q {}, k {}, v {}", kOp, q, k, v);
  check(q.dtype() == DType::F32 || q.dtype() == DType::F64, "{}: q, k and v must be float32 or float64, got {}",
        kOp, q);
  check(std::isfinite(scale), "{}: scale must be finite, got {}", kOp, scale);
  if (key_active.defined()) {
    const Shape expected = {q.size(0), q.size(2)};
    check(key_active.shape() == expected,
          "{}: key_active must be [B, N] = {} for q, k, v {} [B, H, N, d], got {}", kOp, ShapeText{expected},
          ShapeText{q.shape()}, ShapeText{key_active.shape()});
    check(key_active.device() == q.device(), "{}: key_active is on {} but q, k, v are on {}", kOp,
          key_active.device(), q.device());
  }
}

void check_packed(const Tensor& qkv, int64_t heads, double scale, const Tensor& key_active) {
  check(qkv.defined(), "{}: qkv must be defined", kPackedOp);
  check(heads > 0, "{}: heads must be positive, got {}", kPackedOp, heads);
  check(qkv.dim() == 3 && qkv.size(2) > 0 && qkv.size(2) % (3 * heads) == 0,
        "{}: qkv must be [B, N, 3 D] with D a positive multiple of heads = {}, got {}", kPackedOp, heads,
        ShapeText{qkv.shape()});
  check(qkv.dtype() == DType::F32 || qkv.dtype() == DType::F64, "{}: qkv must be float32 or float64, got {}",
        kPackedOp, qkv);
  check(std::isfinite(scale), "{}: scale must be finite, got {}", kPackedOp, scale);
  if (key_active.defined()) {
    const Shape expected = {qkv.size(0), qkv.size(1)};
    check(key_active.shape() == expected, "{}: key_active must be [B, N] = {} for qkv {} [B, N, 3 D], got {}",
          kPackedOp, ShapeText{expected}, ShapeText{qkv.shape()}, ShapeText{key_active.shape()});
    check(key_active.device() == qkv.device(), "{}: key_active is on {} but qkv is on {}", kPackedOp,
          key_active.device(), qkv.device());
  }
}

// The GEMM work of the unfused path for [B, H, N, d] heads (q k^T and p v,
// 2 B H N N d each; a backward twice that), added to gemm_flops_so_far() so
// that a model's GFLOPs are the same whichever path its attention takes.
void count_flops(const Tensor& heads, int64_t products) {
  const int64_t n = heads.size(2);
  add_gemm_flops(products * 2 * heads.size(0) * heads.size(1) * n * n * heads.size(3));
}

}  // namespace

bool fused_attention_supported(Device device, DType dtype, int64_t head_dim) {
  if (device.is_cpu()) return dtype == DType::F32 || dtype == DType::F64;
  // The CUDA kernels (attention.cu) are float32, templated on these head dims.
  return attention_forward_kernel.cuda != nullptr && dtype == DType::F32 && (head_dim == 32 || head_dim == 64);
}

Tensor fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale, const Tensor& key_active) {
  check_inputs(q, k, v, scale, key_active);
  AttentionInputs in;
  in.q = kernel_input(q);
  in.k = kernel_input(k);
  in.v = kernel_input(v);
  in.key_active = kernel_mask(key_active);
  in.scale = scale;
  Tensor out = Tensor::empty_like(q);
  Tensor lse = Tensor::empty({q.size(0), q.size(1), q.size(2)}, q.dtype(), q.device());
  if (out.numel() > 0) attention_forward_kernel.get(q.device())(in, out, lse);
  count_flops(in.q, 2);
  // The backward keeps the inputs, the output (detached: no reference cycle)
  // and the log-sum-exp, [B, H, N]: never the [N, N] probabilities.
  record(kOp, out, {q, k, v}, [in, out_saved = out.detach(), lse](const Tensor& g) {
    Tensor dq = Tensor::empty_like(in.q);
    Tensor dk = Tensor::empty_like(in.q);
    Tensor dv = Tensor::empty_like(in.q);
    if (dq.numel() > 0) attention_backward_kernel.get(g.device())(in, out_saved, lse, g.contiguous(), dq, dk, dv);
    count_flops(in.q, 4);
    return std::vector<Tensor>{dq, dk, dv};
  });
  return out;
}

Tensor fused_attention_packed(const Tensor& qkv, int64_t heads, double scale, const Tensor& key_active) {
  check_packed(qkv, heads, scale, key_active);
  const int64_t batch = qkv.size(0), tokens = qkv.size(1), dim = qkv.size(2) / 3;
  // The projection's output is contiguous already (any other qkv is copied
  // once): q, k and v are views into it.
  const Tensor packed = qkv.detach().contiguous();
  AttentionInputs in;
  in.q = heads_of(packed, 3, 0, heads);
  in.k = heads_of(packed, 3, 1, heads);
  in.v = heads_of(packed, 3, 2, heads);
  in.key_active = kernel_mask(key_active);
  in.scale = scale;
  Tensor out = Tensor::empty({batch, tokens, dim}, qkv.dtype(), qkv.device());  // token-major
  Tensor lse = Tensor::empty({batch, heads, tokens}, qkv.dtype(), qkv.device());
  if (out.numel() > 0) attention_forward_kernel.get(qkv.device())(in, heads_of(out, 1, 0, heads), lse);
  count_flops(in.q, 2);
  // Saved: qkv (through the views in `in`), the output and the log-sum-exp.
  // The one gradient, d(qkv), is written by the kernels column block by
  // column block: dq, dk and dv are views into it, and cover all of it.
  record(kPackedOp, out, {qkv}, [in, out_saved = out.detach(), lse, heads](const Tensor& g) {
    Tensor dqkv = Tensor::empty({in.q.size(0), in.q.size(2), 3 * in.q.size(1) * in.q.size(3)}, in.q.dtype(),
                                in.q.device());
    if (dqkv.numel() > 0) {
      attention_backward_kernel.get(g.device())(in, heads_of(out_saved, 1, 0, heads), lse,
                                                heads_of(g.contiguous(), 1, 0, heads), heads_of(dqkv, 3, 0, heads),
                                                heads_of(dqkv, 3, 1, heads), heads_of(dqkv, 3, 2, heads));
    }
    count_flops(in.q, 4);
    return std::vector<Tensor>{dqkv};
  });
  return out;
}

}  // namespace engine

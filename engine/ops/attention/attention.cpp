// fused_attention: argument checks, the forward through the kernels, and the
// backward beside it (recomputing the probabilities from q, k and the saved
// log-sum-exp instead of keeping them).
#include "engine/ops/attention/attention.h"

#include <cmath>

#include "engine/autograd.h"
#include "engine/ops/attention/attention_kernels.h"

namespace engine {

namespace {

constexpr const char* kOp = "fused_attention";

// What the kernels read: a contiguous tensor without history.
Tensor kernel_input(const Tensor& t) { return t.detach().contiguous(); }

void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, double scale, const Tensor& key_active) {
  check(q.defined() && k.defined() && v.defined(), "{}: q, k and v must all be defined", kOp);
  check(q.dim() == 4 && q.shape() == k.shape() && q.shape() == v.shape(),
        "{}: q, k and v must be [B, H, N, d] of one shape, got q {}, k {}, v {}", kOp, shape_str(q.shape()),
        shape_str(k.shape()), shape_str(v.shape()));
  check(q.dtype() == k.dtype() && q.dtype() == v.dtype() && q.device() == k.device() && q.device() == v.device(),
        "{}: q, k and v must share a dtype and a device, got q {}, k {}, v {}", kOp, q.describe(), k.describe(),
        v.describe());
  check(q.dtype() == DType::F32 || q.dtype() == DType::F64, "{}: q, k and v must be float32 or float64, got {}", kOp,
        q.describe());
  check(std::isfinite(scale), "{}: scale must be finite, got {}", kOp, scale);
  if (key_active.defined()) {
    const Shape expected = {q.size(0), q.size(2)};
    check(key_active.shape() == expected,
          "{}: key_active must be [B, N] = {} for q, k, v {} [B, H, N, d], got {}", kOp, shape_str(expected),
          shape_str(q.shape()), shape_str(key_active.shape()));
    check(key_active.device() == q.device(), "{}: key_active is on {} but q, k, v are on {}", kOp,
          key_active.device().str(), q.device().str());
  }
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
  // The kernels read the mask as float32 (any value but 0 keeps the key).
  if (key_active.defined()) in.key_active = key_active.detach().to(DType::F32).contiguous();
  in.scale = scale;
  Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor lse = Tensor::empty({q.size(0), q.size(1), q.size(2)}, q.dtype(), q.device());
  if (out.numel() > 0) attention_forward_kernel.get(q.device())(in, out, lse);
  // The backward keeps the inputs, the output (detached: no reference cycle)
  // and the log-sum-exp, [B, H, N]: never the [N, N] probabilities.
  record(kOp, out, {q, k, v}, [in, out_saved = out.detach(), lse](const Tensor& g) {
    Tensor dq = Tensor::empty(in.q.shape(), in.q.dtype(), in.q.device());
    Tensor dk = Tensor::empty(in.q.shape(), in.q.dtype(), in.q.device());
    Tensor dv = Tensor::empty(in.q.shape(), in.q.dtype(), in.q.device());
    if (dq.numel() > 0) attention_backward_kernel.get(g.device())(in, out_saved, lse, g.contiguous(), dq, dk, dv);
    return std::vector<Tensor>{dq, dk, dv};
  });
  return out;
}

}  // namespace engine

#include "engine/ops/matmul/matmul.h"

#include <atomic>

#include "engine/autograd.h"
#include "engine/ops/matmul/matmul_kernels.h"
#include "engine/ops/view/view.h"

namespace engine {

namespace {

std::atomic<int64_t> g_gemm_flops{0};
std::atomic<GemmPrecision> g_gemm_precision{GemmPrecision::Float32};

// The stride between consecutive matrices of x's batch dims (all but the last
// two) taken as one, or -1 when they do not collapse to one stride. Size-1
// dims are skipped: their stride is arbitrary (unsqueeze leaves 1 there).
int64_t collapsed_batch_stride(const Tensor& x) {
  int64_t stride = 0, span = 0;  // span: where the next outer batch dim must step
  bool found = false;
  for (int64_t d = x.dim() - 3; d >= 0; --d) {
    if (x.shape()[d] == 1) continue;
    if (!found) {
      stride = x.strides()[d];
    } else if (x.strides()[d] != span) {
      return -1;
    }
    found = true;
    span = x.strides()[d] * x.shape()[d];
  }
  return stride;
}

// Describes the last two dims of t as a GEMM operand, copying only when the
// layout is neither row-major nor a transposed row-major matrix, or the batch
// dims do not collapse to a single stride.
GemmOperand operand(const Tensor& t) {
  const int64_t rank = t.dim();
  auto try_layout = [&](const Tensor& x, GemmOperand* op) {
    const int64_t rows = x.shape()[rank - 2], cols = x.shape()[rank - 1];
    const int64_t row_stride = x.strides()[rank - 2], col_stride = x.strides()[rank - 1];
    op->tensor = x;
    op->rows = rows;
    op->cols = cols;
    if (x.numel() == 0) {  // never read: an empty inner dimension fills C, an empty C returns first
      op->transposed = false;
      op->leading_dim = std::max<int64_t>(cols, 1);
      op->batch_stride = 0;
      return true;
    }
    if (col_stride == 1 && row_stride >= std::max<int64_t>(cols, 1)) {
      op->transposed = false;
      op->leading_dim = row_stride;
    } else if (row_stride == 1 && col_stride >= std::max<int64_t>(rows, 1)) {
      op->transposed = true;  // the memory holds x^T row-major
      op->leading_dim = col_stride;
    } else {
      return false;
    }
    op->batch_stride = collapsed_batch_stride(x);
    return op->batch_stride >= 0;
  };
  GemmOperand op;
  if (!try_layout(t, &op)) {
    const bool fits = try_layout(with_canonical_unit_strides(t.contiguous()), &op);
    check(fits, "matmul: internal error: a contiguous {} is not a GEMM operand", t);
  }
  return op;
}

// out [batch, M, N] = a @ b, with a: [..., M, K] and b: [..., K, N] (b may be 2-D).
Tensor gemm(const Tensor& a, const Tensor& b, const Shape& out_shape) {
  check(a.dtype() == b.dtype(), "matmul: dtypes {} and {} differ", dtype_name(a.dtype()), dtype_name(b.dtype()));
  check(a.device() == b.device(), "matmul: tensors on {} and {}", a.device(), b.device());
  const int64_t m = out_shape[out_shape.size() - 2], n = out_shape.back();
  const int64_t batch = shape_numel(out_shape) / std::max<int64_t>(m * n, 1);
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  if (out.numel() == 0) return out;
  Tensor c = make_view(out, {batch, m, n}, {m * n, n, 1}, 0);
  GemmOperand op_a = operand(a);
  gemm_kernel.get(a.device())(op_a, operand(b), c, batch, 1.0, 0.0);
  g_gemm_flops.fetch_add(2 * batch * m * n * op_a.cols, std::memory_order_relaxed);
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  check(a.dim() >= 2 && b.dim() >= 2, "matmul: needs matrices, got {} and {}", ShapeText{a.shape()},
        ShapeText{b.shape()});
  const int64_t k = a.shape().back();
  check(b.shape()[b.dim() - 2] == k, "matmul: inner sizes differ: {} @ {}", ShapeText{a.shape()},
        ShapeText{b.shape()});
  Shape out_shape(a.shape().begin(), a.shape().end() - 1);
  out_shape.push_back(b.shape().back());

  if (b.dim() == 2) {
    // Leading dims of a fold into M: one large GEMM instead of many small ones.
    Tensor a2 = a.dim() == 2 ? a.detach() : reshape(a.detach(), {-1, k});
    Tensor out = reshape(gemm(a2, b.detach(), {a2.shape()[0], b.shape()[1]}), out_shape);
    record("matmul", out, {a, b}, [a, b](const Tensor& g) {
      Tensor g2 = reshape(g, {-1, g.shape().back()});
      Tensor a_flat = reshape(a, {-1, a.shape().back()});
      return std::vector<Tensor>{a.requires_grad() ? reshape(matmul(g2, transpose(b, 0, 1)), a.shape()) : Tensor(),
                                 b.requires_grad() ? matmul(transpose(a_flat, 0, 1), g2) : Tensor()};
    });
    return out;
  }
  check(a.dim() == b.dim() && std::equal(a.shape().begin(), a.shape().end() - 2, b.shape().begin()),
        "matmul: batch dims of {} and {} must be equal", ShapeText{a.shape()}, ShapeText{b.shape()});
  Tensor out = gemm(a.detach(), b.detach(), out_shape);
  record("bmm", out, {a, b}, [a, b](const Tensor& g) {
    return std::vector<Tensor>{a.requires_grad() ? matmul(g, transpose(b, -1, -2)) : Tensor(),
                               b.requires_grad() ? matmul(transpose(a, -1, -2), g) : Tensor()};
  });
  return out;
}

int64_t gemm_flops_so_far() { return g_gemm_flops.load(std::memory_order_relaxed); }
void add_gemm_flops(int64_t flops) { g_gemm_flops.fetch_add(flops, std::memory_order_relaxed); }

void set_gemm_precision(GemmPrecision precision) { g_gemm_precision.store(precision); }
GemmPrecision gemm_precision() { return g_gemm_precision.load(); }

GemmPrecision parse_gemm_precision(const std::string& name) {
  if (name == "fp32") return GemmPrecision::Float32;
  if (name == "bf16") return GemmPrecision::BFloat16;
  fail("precision '{}' is not one of: fp32, bf16", name);
}

GemmPrecision parse_gemm_precision(const std::string& name, Device device) {
  const GemmPrecision precision = parse_gemm_precision(name);
  check(precision == GemmPrecision::Float32 || device.is_cuda(),
        "precision {} needs a GPU (device {} computes in float32); use fp32", name, device.str());
  return precision;
}

}  // namespace engine

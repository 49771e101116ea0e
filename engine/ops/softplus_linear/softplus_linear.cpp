// softplus_linear: checks, the fused forward through its kernel, and the
// backward (d_pre from the saved output, then linear's backward kernel).
#include "engine/ops/softplus_linear/softplus_linear.h"

#include "engine/autograd.h"
#include "engine/ops/elementwise/elementwise.h"
#include "engine/ops/matmul/matmul.h"
#include "engine/ops/matmul/matmul_kernels.h"
#include "engine/ops/softplus_linear/softplus_linear_kernels.h"
#include "engine/ops/view/view.h"

namespace engine {

namespace {

constexpr const char* kOp = "softplus_linear";

void check_inputs(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check(weight.dim() == 2, "{}: weight must be [out, in], got {}", kOp, weight);
  check(x.dim() >= 1 && x.shape().back() == weight.size(1), "{}: input {} does not match weight {}", kOp, x, weight);
  check(x.dtype() == weight.dtype() && x.device() == weight.device(), "{}: input {} and weight {} differ", kOp, x,
        weight);
  if (!bias.defined()) return;
  check(bias.dim() == 1 && bias.size(0) == weight.size(0), "{}: bias {} does not match weight {}", kOp, bias, weight);
  check(bias.dtype() == weight.dtype() && bias.device() == weight.device(), "{}: bias {} and weight {} differ", kOp,
        bias, weight);
}

// The stride between consecutive rows of x [..., K] taken as [M, K], when
// its rows are K contiguous elements one stride apart (every leading
// dimension steps by whole rows of that stride); -1 when they are not.
int64_t uniform_row_stride(const Tensor& x) {
  const int64_t k = x.shape().back();
  if (k > 1 && x.strides().back() != 1) return -1;
  int64_t stride = k, rows_inside = 1;  // rows_inside: rows that one step of the dimension passes
  for (int64_t d = x.dim() - 2; d >= 0; --d) {
    if (x.size(d) == 1) continue;
    if (rows_inside == 1) stride = x.strides()[d];
    if (stride < 0 || x.strides()[d] != stride * rows_inside) return -1;
    rows_inside *= x.size(d);
  }
  return stride;
}

// x as the kernels read it, [M, K] without history: a view of x's own rows
// when they are at one stride, else rows of a contiguous copy.
Tensor kernel_rows(const Tensor& x, int64_t m, int64_t k) {
  const int64_t stride = uniform_row_stride(x);
  if (stride >= 0) return make_view(x, {m, k}, {stride, 1}, x.offset());
  const Tensor copy = x.detach().contiguous();
  return make_view(copy, {m, k}, {k, 1}, copy.offset());
}

// The gradients of y = softplus(x @ weight^T + bias) from g = dL/dy ([M, N]):
// d_pre = g * softplus'(pre) from y, then linear's backward kernel (dx = d_pre
// @ weight, dweight = d_pre^T x, dbias = column sums of d_pre). x_rows (the
// forward's [M, K] view) is undefined when dweight is not wanted.
struct Backward {
  Tensor x_rows, weight, y;
  Shape x_shape;
  bool want_x, want_weight, want_bias;

  std::vector<Tensor> operator()(const Tensor& grad) const {
    const int64_t m = y.size(0), n = y.size(1), k = weight.size(1);
    const Device device = y.device();
    Tensor d_pre = Tensor::empty({m, n}, y.dtype(), device);
    softplus_grad_kernel.get(device)(y, reshape(grad, {m, n}).contiguous(), d_pre);
    auto empty_if = [&](bool wanted, const Shape& shape) {
      return wanted ? Tensor::empty(shape, y.dtype(), device) : Tensor();
    };
    Tensor dx = empty_if(want_x, {m, k}), dw = empty_if(want_weight, {n, k}), db = empty_if(want_bias, {n});
    const LinearOperands saved{want_weight ? x_rows.contiguous() : Tensor(), weight};
    linear_backward_kernel.get(device)(saved, Tensor(), d_pre, dx, dw, db);
    add_gemm_flops(2 * m * n * k * ((want_x ? 1 : 0) + (want_weight ? 1 : 0)));
    return {want_x ? reshape(dx, x_shape) : Tensor(), dw, db};
  }
};

}  // namespace

Tensor softplus_linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_inputs(x, weight, bias);
  const int64_t n = weight.size(0), k = weight.size(1);
  Shape out_shape = x.shape();
  out_shape.back() = n;
  const int64_t m = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  const bool fused = (x.dtype() == DType::F32 || x.dtype() == DType::F64) && k >= 1 &&
                     k <= kSoftplusLinearMaxInputs && m > 0 && n > 0;
  if (!fused) return softplus(linear(x, weight, bias));

  const Tensor x_rows = kernel_rows(x, m, k);
  const Tensor w = weight.detach().contiguous();
  Tensor y = Tensor::empty({m, n}, x.dtype(), x.device());
  softplus_linear_kernel.get(x.device())(x_rows, w, bias.defined() ? bias.detach().contiguous() : Tensor(), y);
  add_gemm_flops(2 * m * n * k);
  Tensor out = reshape(y, out_shape);
  const bool want_weight = weight.requires_grad();
  // Captures a detached y: the output itself would keep its own node alive.
  record(kOp, out, {x, weight, bias},
         Backward{want_weight ? x_rows : Tensor(), w, y.detach(), x.shape(), x.requires_grad(), want_weight,
                  bias.defined() && bias.requires_grad()});
  return out;
}

}  // namespace engine

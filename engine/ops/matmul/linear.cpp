// The fused linear layer: linear and linear_gelu, forward and backward, each
// one op over the kernels of matmul_kernels.h (CUDA: engine/ops/matmul/linear.cu).
#include <atomic>

#include "engine/autograd.h"
#include "engine/ops/elementwise/elementwise.h"
#include "engine/ops/elementwise/elementwise_kernels.h"
#include "engine/ops/matmul/matmul.h"
#include "engine/ops/matmul/matmul_kernels.h"
#include "engine/ops/reduce/reduce.h"
#include "engine/ops/view/view.h"

namespace engine {

LinearPathCounters& linear_path_counters() {
  static LinearPathCounters counters;
  return counters;
}

Tensor (*cublaslt_gelu_epilogue_probe)(const Tensor& x) = nullptr;

namespace {
std::atomic<bool> g_cublaslt_enabled{true};
}  // namespace

void set_cublaslt_enabled(bool enabled) { g_cublaslt_enabled.store(enabled); }
bool cublaslt_enabled() { return g_cublaslt_enabled.load(); }

namespace {

// The operands of one linear, as the kernels take them: x as a contiguous
// [M, K] matrix, the weight and bias contiguous, all without history.
struct LinearInputs {
  Tensor x2, weight, bias;
  int64_t m = 0, n = 0, k = 0;
  Shape out_shape;  // x's leading dims + [N]
};

LinearInputs prepare(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check(weight.dim() == 2, "{}: weight must be [out, in], got {}", op, shape_str(weight.shape()));
  check(x.dim() >= 1 && x.shape().back() == weight.shape()[1], "{}: input {} does not match weight {}", op,
        shape_str(x.shape()), shape_str(weight.shape()));
  check(x.dtype() == weight.dtype(), "{}: dtypes {} and {} differ", op, dtype_name(x.dtype()),
        dtype_name(weight.dtype()));
  check(x.device() == weight.device(), "{}: tensors on {} and {}", op, x.device().str(), weight.device().str());
  LinearInputs in;
  in.n = weight.shape()[0];
  in.k = weight.shape()[1];
  in.out_shape = Shape(x.shape().begin(), x.shape().end() - 1);
  in.m = shape_numel(in.out_shape);
  in.out_shape.push_back(in.n);
  if (bias.defined()) {
    check(bias.dim() == 1 && bias.shape()[0] == in.n, "{}: bias {} does not match weight {}", op,
          shape_str(bias.shape()), shape_str(weight.shape()));
    check(bias.dtype() == x.dtype() && bias.device() == x.device(), "{}: bias is {}, input is {}", op,
          bias.describe(), x.describe());
    in.bias = bias.detach().contiguous();
  }
  in.x2 = reshape(x.detach(), {in.m, in.k}).contiguous();
  in.weight = weight.detach().contiguous();
  return in;
}

// x @ weight^T + bias as a fresh [M, N] tensor.
Tensor forward_gemm(const LinearInputs& in) {
  const Device device = in.x2.device();
  if (in.m == 0 || in.n == 0) return Tensor::empty({in.m, in.n}, in.x2.dtype(), device);
  if (in.k == 0) {  // an empty sum: the bias alone
    Tensor zeros = Tensor::zeros({in.m, in.n}, in.x2.dtype(), device);
    return in.bias.defined() ? add(zeros, in.bias) : zeros;
  }
  Tensor out = Tensor::empty({in.m, in.n}, in.x2.dtype(), device);
  linear_forward_kernel.get(device)(in.x2, in.weight, in.bias, out);
  add_gemm_flops(2 * in.m * in.n * in.k);
  return out;
}

// The backward shared by linear and linear_gelu (pre: GELU's saved input, or
// undefined). x2 may be undefined when the weight needs no gradient.
std::vector<Tensor> backward(const Tensor& x2, const Tensor& weight, const Tensor& pre, const Tensor& grad,
                             const Shape& x_shape, bool want_x, bool want_weight, bool want_bias) {
  const int64_t n = weight.shape()[0], k = weight.shape()[1];
  const int64_t m = shape_numel(Shape(x_shape.begin(), x_shape.end() - 1));
  const DType dtype = weight.dtype();
  const Device device = weight.device();
  const Tensor g = reshape(grad, {m, n}).contiguous();
  Tensor dx = want_x ? Tensor::empty({m, k}, dtype, device) : Tensor();
  Tensor dw = want_weight ? Tensor::empty({n, k}, dtype, device) : Tensor();
  Tensor db = want_bias ? Tensor::empty({n}, dtype, device) : Tensor();
  if (m == 0 || n == 0 || k == 0) {
    // Empty products: every gradient is an empty sum (or empty).
    for (Tensor* t : {&dx, &dw, &db}) {
      if (t->defined()) *t = Tensor::zeros(t->shape(), dtype, device);
    }
    if (want_bias && m > 0 && n > 0) {  // k == 0 still has a bias gradient
      Tensor gelu_grad = g;
      if (pre.defined()) {
        gelu_grad = Tensor::empty({m, n}, dtype, device);
        unary_backward_kernel.get(device)(UnaryOp::Gelu, pre, pre, g, gelu_grad);
      }
      db = sum(gelu_grad, {0});
    }
  } else {
    linear_backward_kernel.get(device)(x2, weight, pre, g, dx, dw, db);
    add_gemm_flops(2 * m * n * k * ((want_x ? 1 : 0) + (want_weight ? 1 : 0)));
  }
  return {want_x ? reshape(dx, x_shape) : Tensor(), dw, db};
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const LinearInputs in = prepare("linear", x, weight, bias);
  Tensor out = reshape(forward_gemm(in), in.out_shape);
  const bool want_x = x.requires_grad(), want_weight = weight.requires_grad();
  const bool want_bias = bias.defined() && bias.requires_grad();
  record("linear", out, {x, weight, bias},
         [x2 = want_weight ? in.x2 : Tensor(), w = in.weight, x_shape = x.shape(), want_x, want_weight,
          want_bias](const Tensor& g) {
           return backward(x2, w, Tensor(), g, x_shape, want_x, want_weight, want_bias);
         });
  return out;
}

Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const LinearInputs in = prepare("linear_gelu", x, weight, bias);
  check(is_floating(x.dtype()), "linear_gelu: needs a floating-point input, got {}", dtype_name(x.dtype()));
  const Tensor pre = forward_gemm(in);
  const bool keep_pre = needs_grad({&x, &weight, &bias});
  // Without a backward the pre-activation is not needed: GELU in place.
  Tensor y2 = keep_pre ? Tensor::empty(pre.shape(), pre.dtype(), pre.device()) : pre;
  if (pre.numel() > 0) unary_kernel.get(pre.device())(UnaryOp::Gelu, pre, y2);
  Tensor out = reshape(y2, in.out_shape);
  if (!keep_pre) return out;
  const bool want_x = x.requires_grad(), want_weight = weight.requires_grad();
  const bool want_bias = bias.defined() && bias.requires_grad();
  record("linear_gelu", out, {x, weight, bias},
         [x2 = want_weight ? in.x2 : Tensor(), w = in.weight, pre, x_shape = x.shape(), want_x, want_weight,
          want_bias](const Tensor& g) { return backward(x2, w, pre, g, x_shape, want_x, want_weight, want_bias); });
  return out;
}

}  // namespace engine

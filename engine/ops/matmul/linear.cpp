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

// The forward's result and the operands its backward reads.
struct Forward {
  Tensor out;  // [M, N]
  LinearOperands operands;
};

// x @ weight^T + bias as a fresh [M, N] tensor.
Forward forward_gemm(const LinearInputs& in) {
  const Device device = in.x2.device();
  Forward f{Tensor(), {in.x2, in.weight}};
  if (in.m == 0 || in.n == 0) {
    f.out = Tensor::empty({in.m, in.n}, in.x2.dtype(), device);
  } else if (in.k == 0) {  // an empty sum: the bias alone
    Tensor zeros = Tensor::zeros({in.m, in.n}, in.x2.dtype(), device);
    f.out = in.bias.defined() ? add(zeros, in.bias) : zeros;
  } else {
    f.out = Tensor::empty({in.m, in.n}, in.x2.dtype(), device);
    f.operands = linear_forward_kernel.get(device)(in.x2, in.weight, in.bias, f.out);
    add_gemm_flops(2 * in.m * in.n * in.k);
  }
  return f;
}

// What the backward keeps of the forward's operands: x only for d(weight),
// so that an x nothing else holds is freed after the forward.
LinearOperands saved_for_backward(LinearOperands operands, bool want_weight) {
  if (!want_weight) operands.x = Tensor();
  return operands;
}

// The backward shared by linear and linear_gelu (pre: GELU's saved input, or
// undefined). saved.x may be undefined when the weight needs no gradient.
std::vector<Tensor> backward(const LinearOperands& saved, const Tensor& pre, const Tensor& grad,
                             const Shape& x_shape, bool want_x, bool want_weight, bool want_bias) {
  const int64_t n = saved.weight.shape()[0], k = saved.weight.shape()[1];
  const int64_t m = shape_numel(Shape(x_shape.begin(), x_shape.end() - 1));
  const DType dtype = grad.dtype();  // the op's dtype (the saved operands may be bfloat16)
  const Device device = grad.device();
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
    linear_backward_kernel.get(device)(saved, pre, g, dx, dw, db);
    add_gemm_flops(2 * m * n * k * ((want_x ? 1 : 0) + (want_weight ? 1 : 0)));
  }
  return {want_x ? reshape(dx, x_shape) : Tensor(), dw, db};
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const LinearInputs in = prepare("linear", x, weight, bias);
  const Forward f = forward_gemm(in);
  Tensor out = reshape(f.out, in.out_shape);
  const bool want_x = x.requires_grad(), want_weight = weight.requires_grad();
  const bool want_bias = bias.defined() && bias.requires_grad();
  record("linear", out, {x, weight, bias},
         [saved = saved_for_backward(f.operands, want_weight), x_shape = x.shape(), want_x, want_weight,
          want_bias](const Tensor& g) {
           return backward(saved, Tensor(), g, x_shape, want_x, want_weight, want_bias);
         });
  return out;
}

Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const LinearInputs in = prepare("linear_gelu", x, weight, bias);
  check(is_floating(x.dtype()), "linear_gelu: needs a floating-point input, got {}", dtype_name(x.dtype()));
  const Forward f = forward_gemm(in);
  const Tensor& pre = f.out;
  const bool keep_pre = needs_grad({&x, &weight, &bias});
  // Without a backward the pre-activation is not needed: GELU in place.
  Tensor y2 = keep_pre ? Tensor::empty(pre.shape(), pre.dtype(), pre.device()) : pre;
  if (pre.numel() > 0) unary_kernel.get(pre.device())(UnaryOp::Gelu, pre, y2);
  Tensor out = reshape(y2, in.out_shape);
  if (!keep_pre) return out;
  const bool want_x = x.requires_grad(), want_weight = weight.requires_grad();
  const bool want_bias = bias.defined() && bias.requires_grad();
  record("linear_gelu", out, {x, weight, bias},
         [saved = saved_for_backward(f.operands, want_weight), pre, x_shape = x.shape(), want_x, want_weight,
          want_bias](const Tensor& g) { return backward(saved, pre, g, x_shape, want_x, want_weight, want_bias); });
  return out;
}

}  // namespace engine

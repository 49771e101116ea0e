// The fused linear layer: linear, linear_gelu and fused_mlp, forward and
// backward, each one op over the kernels of matmul_kernels.h (CUDA:
// engine/ops/matmul/linear.cu).
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

DType linear_operand_dtype(const Tensor& x) {
  const bool bf16 = x.device().is_cuda() && x.dtype() == DType::F32 &&
                    gemm_precision() == GemmPrecision::BFloat16 && cublaslt_enabled();
  return bf16 ? DType::BF16 : x.dtype();
}

namespace {

// The operands of one linear, as the kernels take them: x as a contiguous
// [M, K] matrix, the weight and bias contiguous, all without history.
struct LinearInputs {
  Tensor x2, weight, bias;
  Tensor residual2;  // [M, N], added to the output (undefined: none)
  int64_t m = 0, n = 0, k = 0;
  Shape out_shape;  // x's leading dims + [N]
};

// x may also be the bfloat16 GEMM operand of a float32 weight on a GPU (see
// linear_operand_dtype); the kernels take it as they take their own roundings.
LinearInputs prepare(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check(weight.dim() == 2, "{}: weight must be [out, in], got {}", op, ShapeText{weight.shape()});
  check(x.dim() >= 1 && x.shape().back() == weight.shape()[1], "{}: input {} does not match weight {}", op,
        ShapeText{x.shape()}, ShapeText{weight.shape()});
  const bool operand = x.dtype() == DType::BF16 && weight.dtype() == DType::F32 && x.device().is_cuda();
  check(x.dtype() == weight.dtype() || operand, "{}: dtypes {} and {} differ", op, dtype_name(x.dtype()),
        dtype_name(weight.dtype()));
  check(x.device() == weight.device(), "{}: tensors on {} and {}", op, x.device(), weight.device());
  LinearInputs in;
  in.n = weight.shape()[0];
  in.k = weight.shape()[1];
  in.out_shape = Shape(x.shape().begin(), x.shape().end() - 1);
  in.m = shape_numel(in.out_shape);
  in.out_shape.push_back(in.n);
  if (bias.defined()) {
    check(bias.dim() == 1 && bias.shape()[0] == in.n, "{}: bias {} does not match weight {}", op,
          ShapeText{bias.shape()}, ShapeText{weight.shape()});
    check(bias.dtype() == weight.dtype() && bias.device() == x.device(), "{}: bias is {}, weight is {}", op,
          bias, weight);
    in.bias = bias.detach().contiguous();
  }
  in.x2 = reshape(x.detach(), {in.m, in.k}).contiguous();
  in.weight = weight.detach().contiguous();
  return in;
}

// A residual for an op's output of out_shape (in the weight's dtype, on its
// device) as the kernels read it: [M, N], contiguous; undefined stays so.
Tensor residual_rows(const char* op, const Tensor& residual, const Shape& out_shape, const Tensor& weight) {
  if (!residual.defined()) return Tensor();
  check(residual.shape() == out_shape && residual.dtype() == weight.dtype() && residual.device() == weight.device(),
        "{}: residual {} does not match the output's shape {} ({} on {})", op, residual, ShapeText{out_shape},
        dtype_name(weight.dtype()), weight.device());
  return reshape(residual.detach(), {shape_numel(Shape(out_shape.begin(), out_shape.end() - 1)), out_shape.back()})
      .contiguous();
}

// The forward's result and the operands its backward reads.
struct Forward {
  Tensor out;  // [M, N]
  LinearOperands operands;
};

// x @ weight^T + bias (+ residual) as a fresh [M, N] tensor in the weight's dtype.
Forward forward_gemm(const LinearInputs& in) {
  const Device device = in.x2.device();
  const DType dtype = in.weight.dtype();
  Forward f{Tensor(), {in.x2, in.weight}};
  if (in.m == 0 || in.n == 0) {
    f.out = Tensor::empty({in.m, in.n}, dtype, device);
  } else if (in.k == 0) {  // an empty sum: the bias alone
    Tensor sum = in.residual2.defined() ? in.residual2.clone() : Tensor::zeros({in.m, in.n}, dtype, device);
    f.out = in.bias.defined() ? add(sum, in.bias) : sum;
  } else {
    f.out = Tensor::empty({in.m, in.n}, dtype, device);
    f.operands = linear_forward_kernel.get(device)(in.x2, in.weight, in.bias, in.residual2, f.out);
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

// The backward shared by linear, linear_gelu and both layers of fused_mlp
// (pre: GELU's saved input, or undefined). saved.x may be undefined when the
// weight needs no gradient.
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

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& residual) {
  LinearInputs in = prepare("linear", x, weight, bias);
  in.residual2 = residual_rows("linear", residual, in.out_shape, weight);
  const Forward f = forward_gemm(in);
  Tensor out = reshape(f.out, in.out_shape);
  const bool want_x = x.requires_grad(), want_weight = weight.requires_grad();
  const bool want_bias = bias.defined() && bias.requires_grad();
  record("linear", out, {x, weight, bias, residual},
         [saved = saved_for_backward(f.operands, want_weight), x_shape = x.shape(), want_x, want_weight,
          want_bias](const Tensor& g) {
           std::vector<Tensor> grads = backward(saved, Tensor(), g, x_shape, want_x, want_weight, want_bias);
           grads.push_back(g);  // the residual's: passed through (ignored when it has none)
           return grads;
         });
  return out;
}

Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const LinearInputs in = prepare("linear_gelu", x, weight, bias);
  check(is_floating(weight.dtype()), "linear_gelu: needs floating-point weights, got {}",
        dtype_name(weight.dtype()));
  const Forward f = forward_gemm(in);
  const Tensor& pre = f.out;
  const bool keep_pre = needs_grad({&x, &weight, &bias});
  // Without a backward the pre-activation is not needed: GELU in place.
  Tensor y2 = keep_pre ? Tensor::empty_like(pre) : pre;
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

Tensor fused_mlp(const Tensor& x, const Tensor& fc1_weight, const Tensor& fc1_bias, const Tensor& fc2_weight,
                 const Tensor& fc2_bias, const Tensor& residual) {
  const LinearInputs in1 = prepare("fused_mlp (fc1)", x, fc1_weight, fc1_bias);
  check(is_floating(fc1_weight.dtype()), "fused_mlp: needs floating-point weights, got {}",
        dtype_name(fc1_weight.dtype()));
  const Forward f1 = forward_gemm(in1);
  const Tensor& pre = f1.out;  // [M, H]
  const Tensor hidden = gelu_operand_kernel.get(pre.device())(pre);
  LinearInputs in2 = prepare("fused_mlp (fc2)", hidden, fc2_weight, fc2_bias);
  Shape out_shape = in1.out_shape;  // x's leading dims + [fc2's outputs]
  out_shape.back() = in2.n;
  in2.residual2 = residual_rows("fused_mlp", residual, out_shape, fc2_weight);
  const Forward f2 = forward_gemm(in2);
  Tensor out = reshape(f2.out, out_shape);
  if (!needs_grad({&x, &fc1_weight, &fc1_bias, &fc2_weight, &fc2_bias, &residual})) return out;
  const bool want_x = x.requires_grad(), want_w1 = fc1_weight.requires_grad(), want_w2 = fc2_weight.requires_grad();
  const bool want_b1 = fc1_bias.defined() && fc1_bias.requires_grad();
  const bool want_b2 = fc2_bias.defined() && fc2_bias.requires_grad();
  const bool want_hidden = want_x || want_w1 || want_b1;  // d(hidden) only feeds fc1's gradients
  record("fused_mlp", out, {x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual},
         [saved1 = want_hidden ? saved_for_backward(f1.operands, want_w1) : LinearOperands{},
          saved2 = saved_for_backward(f2.operands, want_w2),
          pre = want_hidden ? pre : Tensor(), x_shape = x.shape(), hidden_shape = pre.shape(), want_x, want_w1,
          want_b1, want_w2, want_b2, want_hidden](const Tensor& g) {
           // The residual's gradient is g, passed through (ignored when it has none).
           std::vector<Tensor> fc2 = backward(saved2, Tensor(), g, hidden_shape, want_hidden, want_w2, want_b2);
           if (!want_hidden) return std::vector<Tensor>{Tensor(), Tensor(), Tensor(), fc2[1], fc2[2], g};
           std::vector<Tensor> fc1 = backward(saved1, pre, fc2[0], x_shape, want_x, want_w1, want_b1);
           return std::vector<Tensor>{fc1[0], fc1[1], fc1[2], fc2[1], fc2[2], g};
         });
  return out;
}

}  // namespace engine

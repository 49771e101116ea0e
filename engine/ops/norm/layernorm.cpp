// Layer normalisation: fused forward and backward kernels; the forward saves
// each row's mean and 1/std for the backward.
#include "engine/ops/norm/layernorm.h"

#include "engine/autograd.h"
#include "engine/ops/norm/layernorm_kernels.h"
#include "engine/ops/rows.h"

namespace engine {

namespace {

// weight and bias are optional; when present they are [cols] like x.
void check_affine_param(const Tensor& param, const char* what, const Tensor& x) {
  if (!param.defined()) return;
  check(param.shape() == Shape{x.shape().back()}, "layer_norm: {} of shape {} does not match input {}", what,
        ShapeText{param.shape()}, x);
  check(param.dtype() == x.dtype() && param.device() == x.device(), "layer_norm: {} is {} but the input is {}",
        what, param, x);
}

Tensor contiguous_if_defined(const Tensor& t) { return t.defined() ? t.detach().contiguous() : Tensor(); }

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return layer_norm(x, weight, bias, eps, x.dtype());
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, DType out_dtype) {
  check(x.dim() >= 1, "layer_norm: needs at least one dimension, got {}", x);
  check(out_dtype == x.dtype() || (out_dtype == DType::BF16 && x.dtype() == DType::F32 && x.device().is_cuda()),
        "layer_norm: cannot write {} for {} (only x's dtype, or bfloat16 for float32 on a GPU)",
        dtype_name(out_dtype), x);
  check(eps >= 0.0, "layer_norm: eps must be non-negative, got {}", eps);
  check_affine_param(weight, "weight", x);
  check_affine_param(bias, "bias", x);
  Tensor input = last_dim_rows(x.detach().contiguous());
  Tensor w = contiguous_if_defined(weight);
  const int64_t rows = input.shape()[0], cols = input.shape()[1];
  Tensor out = Tensor::empty(x.shape(), out_dtype, x.device());
  Tensor mean = Tensor::empty({rows}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty({rows}, x.dtype(), x.device());
  if (out.numel() > 0) {
    layer_norm_forward_kernel.get(x.device())(input, w, contiguous_if_defined(bias), eps, last_dim_rows(out), mean,
                                              rstd);
  }
  const bool weight_grad = weight.defined() && weight.requires_grad();
  const bool bias_grad = bias.defined() && bias.requires_grad();
  record("layer_norm", out, {x, weight, bias},
         [input, w, mean, rstd, cols, weight_grad, bias_grad, x_shape = x.shape()](const Tensor& g) {
           Tensor dx = Tensor::empty(x_shape, g.dtype(), g.device());
           // The kernels write the parameter gradients in full; an empty input
           // gets zeros.
           auto param_grad = [&](bool wanted) {
             if (!wanted) return Tensor();
             return dx.numel() > 0 ? Tensor::empty({cols}, g.dtype(), g.device())
                                   : Tensor::zeros({cols}, g.dtype(), g.device());
           };
           Tensor dweight = param_grad(weight_grad), dbias = param_grad(bias_grad);
           if (dx.numel() > 0) {
             layer_norm_backward_kernel.get(g.device())(input, w, mean, rstd, last_dim_rows(g.contiguous()),
                                                        last_dim_rows(dx), dweight, dbias);
           }
           return std::vector<Tensor>{dx, dweight, dbias};
         });
  return out;
}

}  // namespace engine

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

// What the backward reads of the forward.
struct Normalized {
  Tensor input, weight, mean, rstd;  // [rows, cols] x, [cols] weight (or undefined), [rows] statistics
  bool weight_grad = false, bias_grad = false;
};

// The forward: returns y, and fills n for the backward.
Tensor normalize(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, DType out_dtype,
                 Normalized& n) {
  check(x.dim() >= 1, "layer_norm: needs at least one dimension, got {}", x);
  check(out_dtype == x.dtype() || (out_dtype == DType::BF16 && x.dtype() == DType::F32 && x.device().is_cuda()),
        "layer_norm: cannot write {} for {} (only x's dtype, or bfloat16 for float32 on a GPU)",
        dtype_name(out_dtype), x);
  check(eps >= 0.0, "layer_norm: eps must be non-negative, got {}", eps);
  check_affine_param(weight, "weight", x);
  check_affine_param(bias, "bias", x);
  n.input = last_dim_rows(x.detach().contiguous());
  n.weight = contiguous_if_defined(weight);
  const int64_t rows = n.input.shape()[0];
  Tensor out = Tensor::empty(x.shape(), out_dtype, x.device());
  n.mean = Tensor::empty({rows}, x.dtype(), x.device());
  n.rstd = Tensor::empty({rows}, x.dtype(), x.device());
  if (out.numel() > 0) {
    layer_norm_forward_kernel.get(x.device())(n.input, n.weight, contiguous_if_defined(bias), eps,
                                              last_dim_rows(out), n.mean, n.rstd);
  }
  n.weight_grad = weight.defined() && weight.requires_grad();
  n.bias_grad = bias.defined() && bias.requires_grad();
  return out;
}

// {dx, dweight, dbias} for the output's gradient g; dx_other (undefined, or
// shaped like x) is x's gradient from elsewhere, added in the same pass.
std::vector<Tensor> normalize_backward(const Normalized& n, const Tensor& g, const Tensor& dx_other) {
  check(!dx_other.defined() || (dx_other.shape() == g.shape() && dx_other.dtype() == g.dtype()),
        "layer_norm: the passed-on input's gradient {} does not match {}", dx_other, g);
  const int64_t cols = n.input.shape()[1];
  Tensor dx = Tensor::empty(g.shape(), g.dtype(), g.device());
  // The kernels write the parameter gradients in full; an empty input gets zeros.
  auto param_grad = [&](bool wanted) {
    if (!wanted) return Tensor();
    return dx.numel() > 0 ? Tensor::empty({cols}, g.dtype(), g.device()) : Tensor::zeros({cols}, g.dtype(), g.device());
  };
  Tensor dweight = param_grad(n.weight_grad), dbias = param_grad(n.bias_grad);
  if (dx.numel() > 0) {
    layer_norm_backward_kernel.get(g.device())(
        n.input, n.weight, n.mean, n.rstd, last_dim_rows(g.contiguous()),
        dx_other.defined() ? last_dim_rows(dx_other.contiguous()) : Tensor(), last_dim_rows(dx), dweight, dbias);
  }
  return {dx, dweight, dbias};
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return layer_norm(x, weight, bias, eps, x.dtype());
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, DType out_dtype) {
  Normalized n;
  Tensor out = normalize(x, weight, bias, eps, out_dtype, n);
  record("layer_norm", out, {x, weight, bias},
         [n](const Tensor& g) { return normalize_backward(n, g, Tensor()); });
  return out;
}

std::vector<Tensor> layer_norm_passing_input(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                                             DType out_dtype) {
  Normalized n;
  std::vector<Tensor> outputs{x.detach(), normalize(x, weight, bias, eps, out_dtype, n)};
  record_outputs("layer_norm_passing_input", outputs, {x, weight, bias},
                 [n](const std::vector<Tensor>& grads) {
                   const Tensor &passed = grads[0], &normed = grads[1];
                   if (!normed.defined()) return std::vector<Tensor>{passed, Tensor(), Tensor()};
                   return normalize_backward(n, normed, passed);
                 });
  return outputs;
}

}  // namespace engine

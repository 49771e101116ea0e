// depthwise_conv1d and depthwise_conv1d_silu: argument checks, forward through
// the kernels, backward beside them.
#include "engine/ops/conv/depthwise_conv1d.h"

#include "engine/autograd.h"
#include "engine/ops/conv/depthwise_conv1d_kernels.h"
#include "engine/ops/elementwise/elementwise_kernels.h"
#include "engine/ops/scan/sequence.h"

namespace engine {

using namespace sequence;  // the sequence ops' shared helpers

namespace {

// depthwise_conv1d, and with silu its SiLU'd form, whose backward takes
// SiLU's gradient from the convolution it kept (pre) before the conv's.
Tensor conv_op(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t pad_left,
               bool reverse, bool silu) {
  check_sequence(op, "x", x);
  check(weight.dim() == 2 && weight.size(0) == x.size(2) && weight.size(1) > 0,
        "{}: weight must be [C, K] with C = {}, got {}", op, x.size(2), weight);
  if (bias.defined()) check_shape(op, "bias", bias, {x.size(2)});
  const int64_t taps = weight.size(1);
  check(pad_left >= 0 && pad_left < taps, "{}: pad_left must be in [0, {}), got {}", op, taps, pad_left);
  check_alike(op, {x, weight, bias});
  Tensor x_in = kernel_input(x), w_in = kernel_input(weight);
  Tensor y = Tensor::empty_like(x);
  const bool keep_pre = silu && needs_grad({x, weight, bias});
  const Tensor pre = keep_pre ? Tensor::empty_like(x) : Tensor();
  if (y.numel() > 0) {
    depthwise_conv1d_kernel.get(x.device())(x_in, w_in, kernel_input(bias), y, pad_left, reverse, silu, pre);
  }
  record(op, y, {x, weight, bias},
         [x_in, w_in, with_bias = bias.defined(), pad_left, reverse, pre, post = silu ? y.detach() : Tensor()](
             const Tensor& g) {
           Tensor dx = Tensor::empty_like(x_in), dweight = Tensor::empty_like(w_in);
           Tensor dbias = with_bias ? Tensor::empty({w_in.size(0)}, g.dtype(), g.device()) : Tensor();
           if (g.numel() > 0) {
             Tensor dconv = g.contiguous();
             if (pre.defined()) {
               dconv = Tensor::empty_like(g);
               unary_backward_kernel.get(g.device())(UnaryOp::Silu, pre, post, g.contiguous(), dconv);
             }
             depthwise_conv1d_backward_kernel.get(g.device())(x_in, w_in, dconv, dx, dweight, dbias, pad_left,
                                                              reverse);
           }
           return std::vector<Tensor>{dx, dweight, dbias};
         });
  return y;
}

}  // namespace

Tensor depthwise_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t pad_left, bool reverse) {
  return conv_op("depthwise_conv1d", x, weight, bias, pad_left, reverse, /*silu=*/false);
}

Tensor depthwise_conv1d_silu(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t pad_left,
                             bool reverse) {
  return conv_op("depthwise_conv1d_silu", x, weight, bias, pad_left, reverse, /*silu=*/true);
}

}  // namespace engine

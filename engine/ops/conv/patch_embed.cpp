// Patch convolution as im2col + one GEMM over the whole batch; autograd
// comes from im2col's backward (col2im) and from matmul's.
#include "engine/ops/conv/patch_embed.h"

#include "engine/autograd.h"
#include "engine/ops/conv/conv_kernels.h"
#include "engine/ops/matmul/matmul.h"
#include "engine/ops/view/view.h"

namespace engine {

namespace {

void check_conv_shapes(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const std::string shapes = fmt::format("x {}, weight {}{}", shape_str(x.shape()), shape_str(weight.shape()),
                                         bias.defined() ? ", bias " + shape_str(bias.shape()) : "");
  check(x.dim() == 4 && weight.dim() == 4 && weight.size(2) == weight.size(3),
        "patch_conv2d: needs x [B, C, H, W] and weight [D, C, P, P]; got {}", shapes);
  const int64_t patch = weight.size(2);
  check(x.size(1) == weight.size(1), "patch_conv2d: x has {} channels, weight expects {} ({})", x.size(1),
        weight.size(1), shapes);
  check(patch > 0 && x.size(2) % patch == 0 && x.size(3) % patch == 0,
        "patch_conv2d: H and W must be multiples of the patch size {} ({})", patch, shapes);
  check(!bias.defined() || bias.shape() == Shape{weight.size(0)}, "patch_conv2d: bias must be [D] ({})", shapes);
}

// x [B, C, H, W] -> cols [B * (H/P) * (W/P), C * P * P]; backward: col2im.
Tensor im2col(const Tensor& x, int64_t patch) {
  const Shape& s = x.shape();
  Tensor cols = Tensor::empty({s[0] * (s[2] / patch) * (s[3] / patch), s[1] * patch * patch}, x.dtype(), x.device());
  im2col_kernel.get(x.device())(x.contiguous(), patch, cols);
  record("im2col", cols, {x}, [patch, shape = x.shape()](const Tensor& g) {
    Tensor dx = Tensor::zeros(shape, g.dtype(), g.device());
    col2im_kernel.get(g.device())(g.contiguous(), patch, dx);
    return std::vector<Tensor>{dx};
  });
  return cols;
}

}  // namespace

Tensor patch_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_conv_shapes(x, weight, bias);
  const int64_t batch = x.size(0), out_channels = weight.size(0), patch = weight.size(2);
  const int64_t rows = x.size(2) / patch, columns = x.size(3) / patch;
  // Every patch of every image is one row of cols: a single GEMM for the batch.
  Tensor y = linear(im2col(x, patch), reshape(weight, {out_channels, -1}), bias);  // [B * rows * columns, D]
  // An NCHW view of the NHWC result, no copy (see the header).
  return permute(reshape(y, {batch, rows, columns, out_channels}), {0, 3, 1, 2});
}

}  // namespace engine

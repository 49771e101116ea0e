// Cumulative sum: forward scan; the backward is the reverse scan of the gradient.
#include "engine/ops/cumsum/cumsum.h"

#include "engine/autograd.h"
#include "engine/ops/cumsum/cumsum_kernels.h"
#include "engine/ops/view/view.h"

namespace engine {

namespace {

// A new tensor: the (reverse) inclusive scan of x along dim, without autograd.
Tensor scan(const Tensor& x, int64_t dim, bool reverse) {
  Tensor input = x.detach().contiguous();
  Tensor out = Tensor::empty_like(x);
  if (out.numel() == 0) return out;
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= x.shape()[d];
  for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= x.shape()[d];
  const Shape layout{outer, x.shape()[dim], inner};
  const Shape strides = contiguous_strides(layout);
  cumsum_kernel.get(x.device())(make_view(input, layout, strides, input.offset()), make_view(out, layout, strides, 0),
                                reverse);
  return out;
}

}  // namespace

Tensor cumsum(const Tensor& x, int64_t dim) {
  dim = wrap_dim(dim, x.dim());
  Tensor out = scan(x, dim, /*reverse=*/false);
  record("cumsum", out, {x}, [dim](const Tensor& g) { return std::vector<Tensor>{scan(g, dim, /*reverse=*/true)}; });
  return out;
}

}  // namespace engine

#include "engine/ops/reduce/reduce.h"

#include <algorithm>

#include "engine/autograd.h"
#include "engine/ops/copy/copy.h"
#include "engine/ops/elementwise/elementwise.h"
#include "engine/ops/reduce/reduce_kernels.h"
#include "engine/ops/view/view.h"

namespace engine {

namespace {

struct ReduceLayout {
  std::vector<bool> reduced;  // per input dim
  Shape kept_shape;           // output shape with keepdim = true
  Shape out_shape;            // output shape as requested
  std::vector<int64_t> order; // kept dims first, then reduced dims
  int64_t length = 1;         // elements reduced per output
};

ReduceLayout plan(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  ReduceLayout layout;
  const int64_t rank = x.dim();
  layout.reduced.assign(rank, false);
  for (int64_t d : dims) layout.reduced[wrap_dim(d, rank)] = true;
  for (int64_t d = 0; d < rank; ++d) {
    if (!layout.reduced[d]) layout.order.push_back(d);
  }
  for (int64_t d = 0; d < rank; ++d) {
    const int64_t size = x.shape()[d];
    if (layout.reduced[d]) {
      layout.order.push_back(d);
      layout.length *= size;
      layout.kept_shape.push_back(1);
      if (keepdim) layout.out_shape.push_back(1);
    } else {
      layout.kept_shape.push_back(size);
      layout.out_shape.push_back(size);
    }
  }
  return layout;
}

// Runs the kernel over x viewed as [rows, length]; returns values in
// out_shape and, for Max, indices (positions within the reduced block).
std::pair<Tensor, Tensor> reduce_rows(ReduceOp op, const Tensor& x, const ReduceLayout& layout) {
  Tensor matrix = permute(x.detach(), layout.order).contiguous();
  const int64_t rows = layout.length == 0 ? 0 : x.numel() / layout.length;
  matrix = make_view(matrix, {rows, layout.length}, {layout.length, 1}, matrix.offset());
  Tensor out = Tensor::empty(layout.out_shape, x.dtype(), x.device());
  Tensor indices;
  if (op == ReduceOp::Max) {
    check(layout.length > 0, "max over an empty dimension of {}", x);
    indices = Tensor::empty(layout.out_shape, DType::I64, x.device());
  } else if (layout.length == 0) {
    fill_(out, 0.0);
    return {out, indices};
  }
  reduce_kernel.get(x.device())(op, matrix, out, indices);
  return {out, indices};
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  const ReduceLayout layout = plan(x, dims, keepdim);
  Tensor out = reduce_rows(ReduceOp::Sum, x, layout).first;
  record("sum", out, {x}, [in_shape = x.shape(), kept = layout.kept_shape](const Tensor& g) {
    return std::vector<Tensor>{expand(reshape(g, kept), in_shape).contiguous()};
  });
  return out;
}

Tensor sum(const Tensor& x) {
  std::vector<int64_t> all(x.dim());
  for (int64_t d = 0; d < x.dim(); ++d) all[d] = d;
  return sum(x, all);
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  const int64_t length = plan(x, dims, keepdim).length;
  return mul(sum(x, dims, keepdim), 1.0 / static_cast<double>(std::max<int64_t>(length, 1)));
}

Tensor mean(const Tensor& x) { return mul(sum(x), 1.0 / static_cast<double>(std::max<int64_t>(x.numel(), 1))); }

MaxResult max(const Tensor& x, int64_t dim, bool keepdim) {
  dim = wrap_dim(dim, x.dim());
  const ReduceLayout layout = plan(x, {dim}, keepdim);
  auto [values, indices] = reduce_rows(ReduceOp::Max, x, layout);
  record("max", values, {x}, [x_shape = x.shape(), dim, indices](const Tensor& g) {
    // Route each gradient to its argmax: scatter in the [rows, length] layout
    // where dim is last, then move dim back into place.
    Shape moved = x_shape;
    moved.erase(moved.begin() + dim);
    moved.push_back(x_shape[dim]);
    Tensor dx = Tensor::zeros(moved, g.dtype(), g.device());
    const int64_t length = x_shape[dim];
    const int64_t rows = length == 0 ? 0 : dx.numel() / length;
    scatter_rows_kernel.get(g.device())(indices.contiguous(), g.contiguous(),
                                        make_view(dx, {rows, length}, {length, 1}, 0));
    const int64_t rank = static_cast<int64_t>(x_shape.size());
    std::vector<int64_t> order(rank);
    for (int64_t i = 0; i < rank; ++i) order[i] = i < dim ? i : (i == dim ? rank - 1 : i - 1);
    return std::vector<Tensor>{permute(dx, order).contiguous()};
  });
  return {values, indices};
}

Tensor argmax(const Tensor& x, int64_t dim) {
  NoGradGuard no_grad;
  return max(x, dim).indices;
}

Tensor sum_to(const Tensor& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  const size_t lead = grad.shape().size() - shape.size();
  std::vector<int64_t> dims;
  for (size_t d = 0; d < grad.shape().size(); ++d) {
    if (d < lead || (shape[d - lead] == 1 && grad.shape()[d] != 1)) dims.push_back(static_cast<int64_t>(d));
  }
  return reshape(sum(grad, dims), shape);
}

}  // namespace engine

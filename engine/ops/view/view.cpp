#include "engine/ops/view/view.h"

#include <numeric>

#include "engine/autograd.h"
#include "engine/ops/copy/copy.h"
#include "engine/ops/reduce/reduce.h"

namespace engine {

int64_t wrap_dim(int64_t dim, int64_t rank) {
  check(dim >= -rank && dim < rank, "dimension {} out of range for rank {}", dim, rank);
  return dim < 0 ? dim + rank : dim;
}

namespace {

Shape infer_shape(const Shape& requested, int64_t numel) {
  Shape shape = requested;
  int64_t known = 1;
  int64_t infer_at = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      check(infer_at < 0, "reshape {}: only one dimension can be -1", ShapeText{requested});
      infer_at = static_cast<int64_t>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer_at >= 0) {
    check(known > 0 && numel % known == 0, "reshape: cannot infer {} for {} elements", ShapeText{requested},
          numel);
    shape[infer_at] = numel / known;
  }
  check(shape_numel(shape) == numel, "reshape: shape {} does not hold {} elements", ShapeText{requested}, numel);
  return shape;
}

}  // namespace

Tensor reshape(const Tensor& x, const Shape& requested) {
  const Shape shape = infer_shape(requested, x.numel());
  Tensor source = x.contiguous();  // a view needs a contiguous layout here
  Tensor out = make_view(source, shape, contiguous_strides(shape), source.offset());
  record("reshape", out, {source}, [in_shape = x.shape()](const Tensor& g) {
    return std::vector<Tensor>{reshape(g, in_shape)};
  });
  return out;
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& order) {
  const int64_t rank = x.dim();
  check(static_cast<int64_t>(order.size()) == rank, "permute: {} dims given for a rank-{} tensor",
        order.size(), rank);
  Shape shape(rank), strides(rank);
  std::vector<int64_t> inverse(rank, -1);
  for (int64_t i = 0; i < rank; ++i) {
    int64_t d = wrap_dim(order[i], rank);
    check(inverse[d] < 0, "permute: dimension {} repeated", d);
    inverse[d] = i;
    shape[i] = x.shape()[d];
    strides[i] = x.strides()[d];
  }
  Tensor out = make_view(x, shape, strides, x.offset());
  record("permute", out, {x}, [inverse](const Tensor& g) { return std::vector<Tensor>{permute(g, inverse)}; });
  return out;
}

Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1) {
  std::vector<int64_t> order(x.dim());
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[wrap_dim(dim0, x.dim())], order[wrap_dim(dim1, x.dim())]);
  return permute(x, order);
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  dim = wrap_dim(dim, x.dim());
  const int64_t size = x.shape()[dim];
  check(start >= 0 && length >= 0 && start + length <= size, "narrow: [{}, {}) out of range for size {} of dim {}",
        start, start + length, size, dim);
  Shape shape = x.shape();
  shape[dim] = length;
  Tensor out = make_view(x, shape, x.strides(), x.offset() + start * x.strides()[dim]);
  record("narrow", out, {x}, [in_shape = x.shape(), dim, start](const Tensor& g) {
    // The gradient of a slice is the slice's gradient padded with zeros.
    Tensor full = Tensor::zeros(in_shape, g.dtype(), g.device());
    Tensor window = narrow(full, dim, start, g.shape()[dim]);
    copy_into(window, g);
    return std::vector<Tensor>{full};
  });
  return out;
}

Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  dim = wrap_dim(dim, x.dim());
  if (index < 0) index += x.shape()[dim];
  return squeeze(narrow(x, dim, index, 1), dim);
}

Tensor expand(const Tensor& x, const Shape& shape) {
  check(shape.size() >= x.shape().size(), "expand: cannot expand {} to {}", ShapeText{x.shape()}, ShapeText{shape});
  const size_t lead = shape.size() - x.shape().size();
  Shape strides(shape.size(), 0);
  for (size_t i = 0; i < x.shape().size(); ++i) {
    const int64_t from = x.shape()[i];
    check(from == shape[lead + i] || from == 1, "expand: cannot expand {} to {}", ShapeText{x.shape()},
          ShapeText{shape});
    strides[lead + i] = from == 1 && shape[lead + i] != 1 ? 0 : x.strides()[i];
  }
  Tensor out = make_view(x, shape, strides, x.offset());
  record("expand", out, {x}, [in_shape = x.shape()](const Tensor& g) {
    return std::vector<Tensor>{sum_to(g, in_shape)};
  });
  return out;
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  dim = wrap_dim(dim, x.dim() + 1);
  Shape shape = x.shape();
  Shape strides = x.strides();
  shape.insert(shape.begin() + dim, 1);
  strides.insert(strides.begin() + dim, 1);  // any stride works for a size-1 dim
  Tensor out = make_view(x, shape, strides, x.offset());
  record("unsqueeze", out, {x}, [dim](const Tensor& g) { return std::vector<Tensor>{squeeze(g, dim)}; });
  return out;
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  dim = wrap_dim(dim, x.dim());
  check(x.shape()[dim] == 1, "squeeze: dim {} has size {}, not 1", dim, x.shape()[dim]);
  Shape shape = x.shape();
  Shape strides = x.strides();
  shape.erase(shape.begin() + dim);
  strides.erase(strides.begin() + dim);
  Tensor out = make_view(x, shape, strides, x.offset());
  record("squeeze", out, {x}, [dim](const Tensor& g) {
    return std::vector<Tensor>{unsqueeze(g, dim)};
  });
  return out;
}

}  // namespace engine

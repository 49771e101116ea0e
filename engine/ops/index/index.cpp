// Index ops: gather/index_select and select-based ops through the device
// kernels, concat/split through views; backward beside each forward.
#include "engine/ops/index/index.h"

#include <algorithm>

#include "engine/autograd.h"
#include "engine/ops/copy/copy.h"
#include "engine/ops/elementwise/elementwise.h"
#include "engine/ops/index/index_kernels.h"
#include "engine/ops/reduce/reduce.h"
#include "engine/ops/view/view.h"

namespace engine {

namespace {

// An int64 index on x's device, or (host_allowed) on the host.
void check_index_tensor(const Tensor& index, const Tensor& x, const char* op, bool host_allowed = false) {
  check(index.dtype() == DType::I64, "{}: index must be int64, got {}", op, dtype_name(index.dtype()));
  check(index.device() == x.device() || (host_allowed && index.device().is_cpu()), "{}: index on {}, input on {}",
        op, index.device(), x.device());
}

// Kernels trust their indices, so they are checked here, on the host (one
// device-to-host copy of the index for a GPU tensor).
void check_index_values(const Tensor& index, int64_t size, int64_t dim, const char* op) {
  for (int64_t i : index.to_ints()) {
    check(i >= 0 && i < size, "{}: index {} out of range for size {} of dim {}", op, i, size, dim);
  }
}

// zeros(shape) + scatter-add of grad: the gradient of a gather from a tensor of that shape.
Tensor scatter_add_into_zeros(const Tensor& grad, int64_t dim, const Tensor& index, const Shape& shape) {
  Tensor dx = Tensor::zeros(shape, grad.dtype(), grad.device());
  scatter_add_kernel.get(grad.device())(grad, dim, index, dx);
  return dx;
}

// Gather with autograd; index already validated.
Tensor gather_recorded(const char* name, const Tensor& x, int64_t dim, const Tensor& index) {
  Tensor out = Tensor::empty(index.shape(), x.dtype(), x.device());
  gather_kernel.get(x.device())(x, dim, index, out);
  record(name, out, {x}, [dim, index, shape = x.shape()](const Tensor& g) {
    return std::vector<Tensor>{scatter_add_into_zeros(g, dim, index, shape)};
  });
  return out;
}

// index_select once the index is checked and on x's device: a gather whose
// index is broadcast along every other dim, through a stride-0 view of the
// 1-D index (no copy).
Tensor select_rows(const Tensor& x, int64_t dim, const Tensor& index) {
  Shape shape = x.shape();
  shape[dim] = index.numel();
  Shape strides(x.dim(), 0);
  strides[dim] = index.strides()[0];
  return gather_recorded("index_select", x, dim, make_view(index, shape, strides, index.offset()));
}

}  // namespace

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& host_or_device_index) {
  dim = wrap_dim(dim, x.dim());
  check(host_or_device_index.dim() == 1, "index_select: index must be 1-D, got shape {}",
        ShapeText{host_or_device_index.shape()});
  check_index_tensor(host_or_device_index, x, "index_select", /*host_allowed=*/true);
  // An index on the host is checked there, before it moves to x's device (a
  // small upload, which does not wait for the GPU): no read-back.
  check_index_values(host_or_device_index, x.size(dim), dim, "index_select");
  return select_rows(x, dim, host_or_device_index.to(x.device()));
}

DeviceIndex::DeviceIndex(const Tensor& host_index, Device device) {
  check(host_index.dim() == 1 && host_index.dtype() == DType::I64 && host_index.device().is_cpu(),
        "DeviceIndex: needs a 1-D int64 index on the host, got {}", host_index);
  const std::vector<int64_t> entries = host_index.to_ints();
  for (int64_t i : entries) {
    check(i >= 0, "DeviceIndex: negative entry {}", i);
    bound_ = std::max(bound_, i + 1);
  }
  // A copy on the CPU too: the caller's tensor may change after the check.
  index_ = device.is_cpu() ? host_index.clone() : host_index.to(device);
}

Tensor index_select(const Tensor& x, int64_t dim, const DeviceIndex& index) {
  dim = wrap_dim(dim, x.dim());
  check(index.defined(), "index_select: an undefined DeviceIndex (default-constructed)");
  check_index_tensor(index.tensor(), x, "index_select");
  check(index.bound() <= x.size(dim), "index_select: index {} out of range for size {} of dim {}",
        index.bound() - 1, x.size(dim), dim);
  return select_rows(x, dim, index.tensor());
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  dim = wrap_dim(dim, x.dim());
  check_index_tensor(index, x, "gather");
  bool fits = index.dim() == x.dim();
  for (int64_t d = 0; fits && d < x.dim(); ++d) fits = d == dim || index.size(d) <= x.size(d);
  check(fits, "gather: index {} does not fit input {} (same rank, sizes no larger outside dim {})",
        ShapeText{index.shape()}, ShapeText{x.shape()}, dim);
  check_index_values(index, x.size(dim), dim, "gather");
  return gather_recorded("gather", x, dim, index);
}

Tensor concat(const std::vector<Tensor>& tensors, int64_t dim) {
  check(!tensors.empty(), "concat: no tensors given");
  const Tensor& first = tensors[0];
  dim = wrap_dim(dim, first.dim());
  Shape shape = first.shape();
  shape[dim] = 0;
  std::vector<int64_t> sizes;
  for (const Tensor& t : tensors) {
    Shape others = t.shape();
    if (t.dim() == first.dim()) others[dim] = 0;
    check(others == shape, "concat along dim {}: shapes {} and {} differ outside that dim", dim,
          ShapeText{first.shape()}, ShapeText{t.shape()});
    check(t.dtype() == first.dtype() && t.device() == first.device(), "concat: inputs {} and {} differ",
          first, t);
    sizes.push_back(t.size(dim));
  }
  for (int64_t s : sizes) shape[dim] += s;
  Tensor out = Tensor::empty(shape, first.dtype(), first.device());
  // Each input fills its window of the output; the gradient is cut the same way.
  std::vector<Tensor> windows = split(out, sizes, dim);
  for (size_t i = 0; i < tensors.size(); ++i) copy_into(windows[i], tensors[i]);
  record("concat", out, tensors, [dim, sizes](const Tensor& g) { return split(g, sizes, dim); });
  return out;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  dim = wrap_dim(dim, x.dim());
  int64_t total = 0;
  bool non_negative = true;
  for (int64_t s : sizes) {
    total += s;
    non_negative = non_negative && s >= 0;
  }
  check(non_negative && total == x.size(dim), "split: sizes {} do not add up to size {} of dim {} of {}",
        ShapeText{sizes}, x.size(dim), dim, ShapeText{x.shape()});
  std::vector<Tensor> pieces;
  {
    NoGradGuard one_node;  // the pieces share the one node recorded below, not a narrow each
    int64_t start = 0;
    for (int64_t s : sizes) {
      pieces.push_back(narrow(x, dim, start, s));
      start += s;
    }
  }
  // The gradient is one buffer with each piece's gradient in its window
  // (zeros first if some piece got none), written once. As narrows, each
  // piece would pad its gradient to x's shape, and the paddings be summed.
  record_outputs("split", pieces, {x},
                 [shape = x.shape(), dtype = x.dtype(), device = x.device(), sizes, dim](const std::vector<Tensor>& g) {
                   const bool every_piece = std::all_of(g.begin(), g.end(), [](const Tensor& t) { return t.defined(); });
                   Tensor full = every_piece ? Tensor::empty(shape, dtype, device) : Tensor::zeros(shape, dtype, device);
                   const std::vector<Tensor> windows = split(full, sizes, dim);
                   for (size_t i = 0; i < windows.size(); ++i) {
                     if (g[i].defined()) copy_into(windows[i], g[i]);
                   }
                   return std::vector<Tensor>{full};
                 });
  return pieces;
}

namespace {

// condition ? a : b through the select kernel, all three broadcast together; no autograd.
Tensor select_values(const Tensor& condition, const Tensor& a, const Tensor& b, const char* op) {
  check(condition.dtype() == DType::U8, "{}: condition must be uint8, got {}", op, dtype_name(condition.dtype()));
  check(a.dtype() == b.dtype(), "{}: dtypes {} and {} differ", op, dtype_name(a.dtype()), dtype_name(b.dtype()));
  check(condition.device() == a.device() && a.device() == b.device(), "{}: tensors on {}, {} and {}", op,
        condition.device(), a.device(), b.device());
  const Shape shape = broadcast_shapes(condition.shape(), broadcast_shapes(a.shape(), b.shape()));
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  // expand() of detached tensors: stride-0 views for the kernel, nothing recorded.
  select_kernel.get(a.device())(expand(condition.detach(), shape), expand(a.detach(), shape),
                                expand(b.detach(), shape), out);
  return out;
}

// A rank-0 tensor holding value, broadcastable against anything like `like`.
Tensor scalar_like(double value, const Tensor& like) { return Tensor::full({}, value, like.dtype(), like.device()); }

}  // namespace

Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b) {
  Tensor out = select_values(condition, a, b, "where");
  record("where", out, {a, b},
         [condition, shape_a = a.shape(), shape_b = b.shape(), need_a = a.requires_grad(),
          need_b = b.requires_grad()](const Tensor& g) {
           // Each side gets the gradient where it was chosen, summed back over its broadcast dims.
           Tensor zero = scalar_like(0.0, g);
           return std::vector<Tensor>{
               need_a ? sum_to(select_values(condition, g, zero, "where"), shape_a) : Tensor(),
               need_b ? sum_to(select_values(condition, zero, g, "where"), shape_b) : Tensor()};
         });
  return out;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  check(broadcast_shapes(mask.shape(), x.shape()) == x.shape(), "masked_fill: mask {} does not broadcast to x {}",
        ShapeText{mask.shape()}, ShapeText{x.shape()});
  Tensor out = select_values(mask, scalar_like(value, x), x, "masked_fill");
  record("masked_fill", out, {x}, [mask](const Tensor& g) {
    return std::vector<Tensor>{select_values(mask, scalar_like(0.0, g), g, "masked_fill")};
  });
  return out;
}

}  // namespace engine

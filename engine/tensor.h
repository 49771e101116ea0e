// Tensor: a cheap handle (shared pointer) to a TensorImpl, which is a view —
// offset, shape and strides in elements — into a ref-counted Storage.
// Autograd state (requires_grad, grad, grad_fn) lives on the TensorImpl;
// see engine/autograd.h for how the graph is recorded and replayed.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/storage.h"

namespace engine {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& shape);   // "[2, 3, 4]"
// A shape as a check()/fail() argument: formatted as shape_str only when the
// message is built, so a check that passes costs no string (Tensor::size and
// the element-wise ops check on every call).
struct ShapeText {
  const Shape& shape;
};
int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);

struct Node;  // autograd graph node (engine/autograd.h)
struct TensorImpl;

class Rng;

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor (e.g. a gradient that is not needed)
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- creation (contiguous, no autograd history) ----
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  // Uninitialised, with t's shape, dtype and device (contiguous whatever t's strides).
  static Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.dtype(), t.device()); }
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu()) {
    return full(shape, 1.0, dtype, device);
  }
  // Copies host values; T picks the dtype (float -> F32, double -> F64, int64_t -> I64 ...).
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                            Device device = Device::cpu());
  static Tensor arange(int64_t n, DType dtype = DType::I64);
  // Fresh random values (never all-zero); generated on the host, then moved.
  static Tensor randn(const Shape& shape, Rng& rng, DType dtype = DType::F32, double stddev = 1.0);
  static Tensor uniform(const Shape& shape, Rng& rng, double low, double high,
                        DType dtype = DType::F32);
  // A view of borrowed memory (e.g. a memory-mapped file); `storage` keeps it alive.
  static Tensor from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype,
                             int64_t offset = 0);

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t offset() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(shape()); }
  DType dtype() const;
  Device device() const;
  bool is_contiguous() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  std::string describe() const;  // "float32[2, 3] on cpu"

  // ---- data access (CPU tensors; T must match the dtype) ----
  template <typename T> T* data() const;
  void* raw_data() const;  // pointer to element [0,...,0] on its device
  const std::shared_ptr<Storage>& storage() const;
  template <typename T> T item() const;  // the single element, converted to T
  std::vector<float> to_floats() const;   // any float dtype, any device -> host floats
  std::vector<double> to_doubles() const;
  std::vector<int64_t> to_ints() const;   // integer dtypes -> host int64

  // ---- copies and conversions (differentiable where it makes sense) ----
  Tensor contiguous() const;  // itself when already contiguous
  Tensor clone() const;       // always a fresh copy
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;

  // ---- autograd ----
  bool requires_grad() const;
  // Marks a leaf as a parameter whose .grad() backward fills.
  Tensor& set_requires_grad(bool required = true);
  Tensor grad() const;  // undefined until a backward pass reached this leaf
  void set_grad(const Tensor& grad) const;
  void zero_grad() const;  // drops the gradient (the next backward allocates)
  const std::shared_ptr<Node>& grad_fn() const;
  bool is_leaf() const { return grad_fn() == nullptr; }
  // Backpropagates from this tensor: a scalar needs no seed gradient.
  void backward(const Tensor& seed = Tensor()) const;
  Tensor detach() const;  // same storage, no history

  const std::string& name() const;
  Tensor& set_name(const std::string& name);

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same_storage(const Tensor& other) const { return storage() == other.storage(); }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape;
  Shape strides;       // in elements
  DType dtype = DType::F32;
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;
  int grad_output = 0;  // which of grad_fn's outputs this tensor is
  std::string name;
};

// A check for tests: while on, Tensor::empty fills floating-point tensors with
// NaN, so that an op which leaves part of its output unwritten (an empty
// buffer that a kernel was supposed to cover) gives NaN instead of stale
// memory that happens to pass. The test binary turns it on for every test.
void set_poison_empty(bool on);
bool poison_empty();

// Tensors with names (parameters, checkpoint contents), in a stable order.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// A view sharing `base`'s storage, with no autograd history; ops wrap it.
Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides, int64_t offset);

// t (as a view without history, for a kernel's input) with every size-1
// dim's stride set to stride[d + 1] * size[d + 1] (1 for the last dim), the
// stride a contiguous layout gives it. Such a stride never moves an address,
// so unsqueeze and is_contiguous() leave any value there, but a kernel that
// reads a dim's stride as its row or batch stride needs this one.
Tensor with_canonical_unit_strides(const Tensor& t);

// Checks that two shapes are equal, naming `what` in the error.
void check_same_shape(const Tensor& a, const Tensor& b, const char* what);

// Typed pointer to a tensor's first element on its device, nullptr for an
// undefined tensor (an optional weight, an unwanted gradient): for kernels.
template <typename T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? static_cast<T*>(t.raw_data()) : nullptr;
}

}  // namespace engine

template <>
struct fmt::formatter<engine::ShapeText> : fmt::formatter<std::string> {
  template <typename Context>
  auto format(const engine::ShapeText& text, Context& ctx) const {
    return fmt::formatter<std::string>::format(engine::shape_str(text.shape), ctx);
  }
};

// A Tensor formats as describe() ("float32[2, 3] on cpu"), lazily: pass the
// tensor itself to check().
template <>
struct fmt::formatter<engine::Tensor> : fmt::formatter<std::string> {
  template <typename Context>
  auto format(const engine::Tensor& tensor, Context& ctx) const {
    return fmt::formatter<std::string>::format(tensor.describe(), ctx);
  }
};

#include "engine/tensor.h"

#include <atomic>
#include <cstring>
#include <limits>

#include "engine/autograd.h"
#include "engine/ops/copy/copy_kernels.h"
#include "engine/random.h"

namespace engine {

std::string shape_str(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t stride = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    strides[d] = stride;
    stride *= shape[d];
  }
  return strides;
}

// ---------------------------------------------------------------- creation

namespace {
std::atomic<bool> g_poison_empty{false};
}  // namespace

void set_poison_empty(bool on) { g_poison_empty.store(on, std::memory_order_relaxed); }
bool poison_empty() { return g_poison_empty.load(std::memory_order_relaxed); }

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t s : shape) check(s >= 0, "cannot create a tensor of shape {}", ShapeText{shape});
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  Tensor t(std::move(impl));
  if (poison_empty() && is_floating(dtype) && t.numel() > 0) {
    fill_kernel.get(device)(t, std::numeric_limits<double>::quiet_NaN());
  }
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  fill_kernel.get(device)(t, value);
  return t;
}

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  check(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: {} values for shape {}",
        values.size(), ShapeText{shape});
  Tensor host = empty(shape, DTypeOf<T>::value);
  if (!values.empty()) std::memcpy(host.raw_data(), values.data(), values.size() * sizeof(T));
  return device.is_cpu() ? host : host.to(device);
}
template Tensor Tensor::from_vector(const std::vector<float>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<double>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<int32_t>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<int64_t>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<uint8_t>&, const Shape&, Device);

Tensor Tensor::arange(int64_t n, DType dtype) {
  std::vector<double> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) values[i] = static_cast<double>(i);
  return from_vector(values, {n}).to(dtype);
}

Tensor Tensor::randn(const Shape& shape, Rng& rng, DType dtype, double stddev) {
  std::vector<double> values(static_cast<size_t>(shape_numel(shape)));
  for (double& v : values) v = rng.normal(0.0, stddev);
  return from_vector(values, shape).to(dtype);
}

Tensor Tensor::uniform(const Shape& shape, Rng& rng, double low, double high, DType dtype) {
  std::vector<double> values(static_cast<size_t>(shape_numel(shape)));
  for (double& v : values) v = rng.uniform(low, high);
  return from_vector(values, shape).to(dtype);
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype, int64_t offset) {
  check(offset >= 0 && static_cast<size_t>(offset + shape_numel(shape)) * dtype_size(dtype) <= storage->nbytes(),
        "from_storage: shape {} at offset {} exceeds a storage of {} bytes", ShapeText{shape}, offset,
        storage->nbytes());
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->offset = offset;
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->offset = offset;
  impl->shape = shape;
  impl->strides = strides;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

Tensor with_canonical_unit_strides(const Tensor& t) {
  Shape strides = t.strides();
  for (size_t d = strides.size(); d-- > 0;) {
    if (t.shape()[d] == 1) strides[d] = d + 1 < strides.size() ? strides[d + 1] * t.shape()[d + 1] : 1;
  }
  return make_view(t, t.shape(), strides, t.offset());
}

void check_same_shape(const Tensor& a, const Tensor& b, const char* what) {
  check(a.shape() == b.shape(), "{}: shapes {} and {} differ", what, ShapeText{a.shape()}, ShapeText{b.shape()});
}

// ---------------------------------------------------------------- metadata

namespace {
const TensorImpl& require(const std::shared_ptr<TensorImpl>& impl) {
  check(impl != nullptr, "use of an undefined tensor");
  return *impl;
}
}  // namespace

const Shape& Tensor::shape() const { return require(impl_).shape; }
const Shape& Tensor::strides() const { return require(impl_).strides; }
int64_t Tensor::offset() const { return require(impl_).offset; }
DType Tensor::dtype() const { return require(impl_).dtype; }
Device Tensor::device() const { return require(impl_).storage->device(); }
const std::shared_ptr<Storage>& Tensor::storage() const { return require(impl_).storage; }

int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  check(d >= -n && d < n, "dimension {} out of range for a tensor of shape {}", d, ShapeText{shape()});
  return shape()[d < 0 ? d + n : d];
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t d = shape().size(); d-- > 0;) {
    if (shape()[d] != 1 && strides()[d] != expected) return false;
    expected *= shape()[d];
  }
  return true;
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return fmt::format("{}{} on {}", dtype_name(dtype()), shape_str(shape()), device().str());
}

void* Tensor::raw_data() const {
  return static_cast<char*>(storage()->data()) + offset() * static_cast<int64_t>(dtype_size(dtype()));
}

template <typename T>
T* Tensor::data() const {
  check(dtype() == DTypeOf<T>::value, "data<{}>() on a {} tensor", dtype_name(DTypeOf<T>::value),
        dtype_name(dtype()));
  check(device().is_cpu(), "data() needs a CPU tensor, got one on {}", device());
  return static_cast<T*>(raw_data());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template int32_t* Tensor::data<int32_t>() const;
template int64_t* Tensor::data<int64_t>() const;
template uint8_t* Tensor::data<uint8_t>() const;
template BFloat16* Tensor::data<BFloat16>() const;
template Half* Tensor::data<Half>() const;

namespace {
template <typename T>
std::vector<T> host_values(const Tensor& t) {
  Tensor host = t.to(Device::cpu()).to(DTypeOf<T>::value).contiguous();
  const T* p = host.data<T>();
  return std::vector<T>(p, p + host.numel());
}
}  // namespace

std::vector<float> Tensor::to_floats() const { return host_values<float>(*this); }
std::vector<double> Tensor::to_doubles() const { return host_values<double>(*this); }
std::vector<int64_t> Tensor::to_ints() const { return host_values<int64_t>(*this); }

template <typename T>
T Tensor::item() const {
  check(numel() == 1, "item() on a tensor of shape {} (needs exactly one element)", ShapeText{shape()});
  return static_cast<T>(to_doubles()[0]);
}
template float Tensor::item<float>() const;
template double Tensor::item<double>() const;
template int64_t Tensor::item<int64_t>() const;

// ---------------------------------------------------------------- copies

namespace {
// A contiguous copy of `src` with the given dtype, on src's device; no autograd.
Tensor copy_as(const Tensor& src, DType dtype) {
  Tensor out = Tensor::empty(src.shape(), dtype, src.device());
  copy_kernel.get(src.device())(src, out);
  return out;
}
}  // namespace

Tensor Tensor::clone() const {
  Tensor out = copy_as(*this, dtype());
  record("clone", out, {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::to(DType target) const {
  if (target == dtype()) return *this;
  Tensor out = copy_as(*this, target);
  DType source = dtype();
  record("to_dtype", out, {*this}, [source](const Tensor& g) { return std::vector<Tensor>{g.to(source)}; });
  return out;
}

Tensor Tensor::to(Device target) const {
  if (target == device()) return *this;
  Tensor src = contiguous();
  Tensor out = Tensor::empty(shape(), dtype(), target);
  device_copy(out.raw_data(), target, src.raw_data(), src.device(), nbytes());
  Device source = device();
  record("to_device", out, {*this}, [source](const Tensor& g) { return std::vector<Tensor>{g.to(source)}; });
  return out;
}

// ---------------------------------------------------------------- autograd

bool Tensor::requires_grad() const { return require(impl_).requires_grad; }

Tensor& Tensor::set_requires_grad(bool required) {
  check(!required || is_floating(dtype()), "only floating-point tensors can require grad (got {})",
        dtype_name(dtype()));
  check(is_leaf(), "set_requires_grad on a non-leaf tensor (use detach() first)");
  impl_->requires_grad = required;
  return *this;
}

Tensor Tensor::grad() const { return require(impl_).grad; }
void Tensor::set_grad(const Tensor& grad) const { impl_->grad = grad; }
void Tensor::zero_grad() const { impl_->grad = Tensor(); }
const std::shared_ptr<Node>& Tensor::grad_fn() const { return require(impl_).grad_fn; }

void Tensor::backward(const Tensor& seed) const {
  if (seed.defined()) return run_backward(*this, seed);
  check(numel() == 1, "backward() without a seed needs a scalar, got shape {}", ShapeText{shape()});
  run_backward(*this, Tensor::ones(shape(), dtype(), device()));
}

Tensor Tensor::detach() const { return make_view(*this, shape(), strides(), offset()); }

const std::string& Tensor::name() const { return require(impl_).name; }
Tensor& Tensor::set_name(const std::string& name) {
  impl_->name = name;
  return *this;
}

}  // namespace engine

// CUDA kernels of the elementwise family: the formulas of elementwise_math.h,
// one thread per element.
#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/elementwise/elementwise_kernels.h"
#include "engine/ops/elementwise/elementwise_math.h"

namespace engine {

namespace {

using namespace elementwise_math;

template <typename T>
__global__ void binary_kernel_impl(BinaryOp op, StridedLayout<2> layout, const T* a, const T* b, T* out, int64_t n) {
  for (int64_t i : grid_stride(n)) {
    const Offsets<2> at = layout.offsets(i);
    out[i] = apply_binary(op, a[at.at[0]], b[at.at[1]]);
  }
}

template <typename T>
__global__ void unary_kernel_impl(UnaryOp op, const T* x, T* out, int64_t n) {
  for (int64_t i : grid_stride(n)) out[i] = apply_unary(op, x[i]);
}

template <typename T>
__global__ void unary_backward_kernel_impl(UnaryOp op, const T* x, const T* y, const T* dy, T* dx, int64_t n) {
  for (int64_t i : grid_stride(n)) dx[i] = dy[i] * unary_derivative(op, x[i], y[i]);
}

template <typename T>
__global__ void scalar_kernel_impl(ScalarOp op, const T* x, T scalar, T* out, int64_t n) {
  for (int64_t i : grid_stride(n)) out[i] = apply_scalar(op, x[i], scalar);
}

void binary_cuda(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  DeviceGuard guard(out);
  const StridedLayout<2> layout = make_layout<2>(out.shape(), {&a.strides(), &b.strides()});
  dispatch_float(out.dtype(), "binary", [&](auto tag) {
    using T = decltype(tag);
    launch_1d(out.numel(), binary_kernel_impl<T>, op, layout, data_of<T>(a), data_of<T>(b), mutable_data_of<T>(out),
              out.numel());
  });
}

void unary_cuda(UnaryOp op, const Tensor& x, const Tensor& out) {
  DeviceGuard guard(out);
  dispatch_float(x.dtype(), "unary", [&](auto tag) {
    using T = decltype(tag);
    launch_1d(x.numel(), unary_kernel_impl<T>, op, data_of<T>(x), mutable_data_of<T>(out), x.numel());
  });
}

void unary_backward_cuda(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& dx) {
  DeviceGuard guard(dx);
  dispatch_float(x.dtype(), "unary_backward", [&](auto tag) {
    using T = decltype(tag);
    launch_1d(x.numel(), unary_backward_kernel_impl<T>, op, data_of<T>(x), data_of<T>(y), data_of<T>(dy),
              mutable_data_of<T>(dx), x.numel());
  });
}

void scalar_cuda(ScalarOp op, const Tensor& x, double scalar, const Tensor& out) {
  DeviceGuard guard(out);
  dispatch_float(x.dtype(), "scalar", [&](auto tag) {
    using T = decltype(tag);
    launch_1d(x.numel(), scalar_kernel_impl<T>, op, data_of<T>(x), static_cast<T>(scalar), mutable_data_of<T>(out),
              x.numel());
  });
}

const bool registered = [] {
  binary_kernel.cuda = &binary_cuda;
  unary_kernel.cuda = &unary_cuda;
  unary_backward_kernel.cuda = &unary_backward_cuda;
  scalar_kernel.cuda = &scalar_cuda;
  return true;
}();

}  // namespace

}  // namespace engine

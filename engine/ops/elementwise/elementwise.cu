// CUDA kernels of the elementwise family: the formulas of elementwise_cpu.cpp,
// one thread per element.
#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/elementwise/elementwise_kernels.h"

namespace engine {

namespace {

template <typename T>
__device__ T apply_binary(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
  }
  return T(0);
}

template <typename T>
__device__ T sigmoid(T x) {
  return T(1) / (T(1) + exp(-x));
}

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

// Unqualified math calls pick CUDA's float or double overloads.
template <typename T>
__device__ T apply_unary(UnaryOp op, T x) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return exp(x);
    case UnaryOp::Log: return log(x);
    case UnaryOp::Sqrt: return sqrt(x);
    case UnaryOp::Tanh: return tanh(x);
    case UnaryOp::Sigmoid: return sigmoid(x);
    case UnaryOp::Gelu: return T(0.5) * x * (T(1) + erf(x * T(kInvSqrt2)));  // exact (erf) GELU
    case UnaryOp::Silu: return x * sigmoid(x);
    case UnaryOp::Softplus: return x > T(20) ? x : log1p(exp(x));  // no overflow for large x
    case UnaryOp::Relu: return x > T(0) ? x : T(0);
    case UnaryOp::Abs: return fabs(x);
    case UnaryOp::Reciprocal: return T(1) / x;
  }
  return T(0);
}

// d f(x) / dx, given x and y = f(x).
template <typename T>
__device__ T unary_derivative(UnaryOp op, T x, T y) {
  switch (op) {
    case UnaryOp::Neg: return T(-1);
    case UnaryOp::Exp: return y;
    case UnaryOp::Log: return T(1) / x;
    case UnaryOp::Sqrt: return T(0.5) / y;
    case UnaryOp::Tanh: return T(1) - y * y;
    case UnaryOp::Sigmoid: return y * (T(1) - y);
    case UnaryOp::Gelu:
      return T(0.5) * (T(1) + erf(x * T(kInvSqrt2))) + x * T(kInvSqrt2Pi) * exp(T(-0.5) * x * x);
    case UnaryOp::Silu: {
      const T s = sigmoid(x);
      return s * (T(1) + x * (T(1) - s));
    }
    case UnaryOp::Softplus: return sigmoid(x);
    case UnaryOp::Relu: return x > T(0) ? T(1) : T(0);
    case UnaryOp::Abs: return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
    case UnaryOp::Reciprocal: return -y * y;
  }
  return T(0);
}

template <typename T>
__device__ T apply_scalar(ScalarOp op, T x, T s) {
  switch (op) {
    case ScalarOp::Add: return x + s;
    case ScalarOp::Mul: return x * s;
    case ScalarOp::Pow: return pow(x, s);
  }
  return T(0);
}

// a and b broadcast to out's shape by their strides; out contiguous.
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

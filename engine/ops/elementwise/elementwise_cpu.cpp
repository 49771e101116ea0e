// CPU reference kernels of the elementwise family.
#include <cmath>

#include "engine/ops/elementwise/elementwise_kernels.h"
#include "engine/ops/strided.h"

namespace engine {

namespace {

template <typename T>
T apply_binary(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
  }
  return T(0);
}

template <typename T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

template <typename T>
T apply_unary(UnaryOp op, T x) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return std::exp(x);
    case UnaryOp::Log: return std::log(x);
    case UnaryOp::Sqrt: return std::sqrt(x);
    case UnaryOp::Tanh: return std::tanh(x);
    case UnaryOp::Sigmoid: return sigmoid(x);
    case UnaryOp::Gelu: return T(0.5) * x * (T(1) + std::erf(x * T(kInvSqrt2)));  // exact (erf) GELU
    case UnaryOp::Silu: return x * sigmoid(x);
    // log(1 + e^x) without overflow for large x.
    case UnaryOp::Softplus: return x > T(20) ? x : std::log1p(std::exp(x));
    case UnaryOp::Relu: return x > T(0) ? x : T(0);
    case UnaryOp::Abs: return std::abs(x);
    case UnaryOp::Reciprocal: return T(1) / x;
  }
  return T(0);
}

// d f(x) / dx, given x and y = f(x) (whichever is cheaper).
template <typename T>
T unary_derivative(UnaryOp op, T x, T y) {
  switch (op) {
    case UnaryOp::Neg: return T(-1);
    case UnaryOp::Exp: return y;
    case UnaryOp::Log: return T(1) / x;
    case UnaryOp::Sqrt: return T(0.5) / y;
    case UnaryOp::Tanh: return T(1) - y * y;
    case UnaryOp::Sigmoid: return y * (T(1) - y);
    case UnaryOp::Gelu:
      return T(0.5) * (T(1) + std::erf(x * T(kInvSqrt2))) + x * T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
    case UnaryOp::Silu: {
      T s = sigmoid(x);
      return s * (T(1) + x * (T(1) - s));
    }
    case UnaryOp::Softplus: return sigmoid(x);
    case UnaryOp::Relu: return x > T(0) ? T(1) : T(0);
    case UnaryOp::Abs: return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
    case UnaryOp::Reciprocal: return -y * y;
  }
  return T(0);
}

void binary_cpu(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_float(out.dtype(), "binary", [&](auto tag) {
    using T = decltype(tag);
    const T* pa = static_cast<const T*>(a.raw_data());
    const T* pb = static_cast<const T*>(b.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    const Shape out_strides = contiguous_strides(out.shape());
    for_each_row<3>(out.shape(), {&a.strides(), &b.strides(), &out_strides},
                    [&](const auto& offsets, const auto& inner, int64_t length) {
                      const T* ra = pa + offsets[0];
                      const T* rb = pb + offsets[1];
                      T* ro = po + offsets[2];
                      if (inner[0] == 1 && inner[1] == 1) {  // the common, vectorisable case
                        for (int64_t i = 0; i < length; ++i) ro[i] = apply_binary(op, ra[i], rb[i]);
                      } else {
                        for (int64_t i = 0; i < length; ++i)
                          ro[i] = apply_binary(op, ra[i * inner[0]], rb[i * inner[1]]);
                      }
                    },
                    /*parallel=*/true);
  });
}

void unary_cpu(UnaryOp op, const Tensor& x, const Tensor& out) {
  dispatch_float(x.dtype(), "unary", [&](auto tag) {
    using T = decltype(tag);
    const T* px = static_cast<const T*>(x.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    const int64_t n = x.numel();
#pragma omp parallel for if (n >= kParallelElements)
    for (int64_t i = 0; i < n; ++i) po[i] = apply_unary(op, px[i]);
  });
}

void unary_backward_cpu(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& dx) {
  dispatch_float(x.dtype(), "unary_backward", [&](auto tag) {
    using T = decltype(tag);
    const T* px = static_cast<const T*>(x.raw_data());
    const T* py = static_cast<const T*>(y.raw_data());
    const T* pdy = static_cast<const T*>(dy.raw_data());
    T* pdx = static_cast<T*>(dx.raw_data());
    const int64_t n = x.numel();
#pragma omp parallel for if (n >= kParallelElements)
    for (int64_t i = 0; i < n; ++i) pdx[i] = pdy[i] * unary_derivative(op, px[i], py[i]);
  });
}

void scalar_cpu(ScalarOp op, const Tensor& x, double scalar, const Tensor& out) {
  dispatch_float(x.dtype(), "scalar", [&](auto tag) {
    using T = decltype(tag);
    const T* px = static_cast<const T*>(x.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    const T s = static_cast<T>(scalar);
    const int64_t n = x.numel();
#pragma omp parallel for if (n >= kParallelElements)
    for (int64_t i = 0; i < n; ++i) {
      po[i] = op == ScalarOp::Add ? px[i] + s : op == ScalarOp::Mul ? px[i] * s : std::pow(px[i], s);
    }
  });
}

}  // namespace

KernelSlot<BinaryKernel> binary_kernel{"binary", &binary_cpu, nullptr};
KernelSlot<UnaryKernel> unary_kernel{"unary", &unary_cpu, nullptr};
KernelSlot<UnaryBackwardKernel> unary_backward_kernel{"unary_backward", &unary_backward_cpu, nullptr};
KernelSlot<ScalarKernel> scalar_kernel{"scalar", &scalar_cpu, nullptr};

}  // namespace engine

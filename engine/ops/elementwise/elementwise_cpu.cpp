// CPU reference kernels of the elementwise family.
#include <cmath>

#include "engine/ops/elementwise/elementwise_kernels.h"
#include "engine/ops/elementwise/elementwise_math.h"
#include "engine/ops/strided.h"
#include "engine/ops/vector_math.h"

namespace engine {

namespace {

using namespace elementwise_math;

void binary_cpu(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_float(out.dtype(), "binary", [&](auto tag) {
    using T = decltype(tag);
    const Shape out_strides = contiguous_strides(out.shape());
    with_op<BinaryOp, kBinaryOps>(op, [&](auto kOp) {
      const T* pa = static_cast<const T*>(a.raw_data());
      const T* pb = static_cast<const T*>(b.raw_data());
      T* po = static_cast<T*>(out.raw_data());
      for_each_row<3>(out.shape(), {&a.strides(), &b.strides(), &out_strides},
                      [&](const auto& offsets, const auto& inner, int64_t length) {
                        const T* ra = pa + offsets[0];
                        const T* rb = pb + offsets[1];
                        T* ro = po + offsets[2];
                        if (inner[0] == 1 && inner[1] == 1) {  // the common, vectorisable case
                          for (int64_t i = 0; i < length; ++i) ro[i] = apply_binary(kOp(), ra[i], rb[i]);
                        } else {
                          for (int64_t i = 0; i < length; ++i)
                            ro[i] = apply_binary(kOp(), ra[i * inner[0]], rb[i * inner[1]]);
                        }
                      },
                      /*parallel=*/true);
    });
  });
}

void unary_cpu(UnaryOp op, const Tensor& x, const Tensor& out) {
  dispatch_float(x.dtype(), "unary", [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = x.numel();
    with_op<UnaryOp, kUnaryOps>(op, [&](auto kOp) {
      const T* px = static_cast<const T*>(x.raw_data());
      T* po = static_cast<T*>(out.raw_data());
#pragma omp parallel for simd if (n >= kParallelElements)
      for (int64_t i = 0; i < n; ++i) po[i] = apply_unary(kOp(), px[i]);
    });
  });
}

void unary_backward_cpu(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& dx) {
  dispatch_float(x.dtype(), "unary_backward", [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = x.numel();
    with_op<UnaryOp, kUnaryOps>(op, [&](auto kOp) {
      const T* px = static_cast<const T*>(x.raw_data());
      const T* py = static_cast<const T*>(y.raw_data());
      const T* pdy = static_cast<const T*>(dy.raw_data());
      T* pdx = static_cast<T*>(dx.raw_data());
#pragma omp parallel for simd if (n >= kParallelElements)
      for (int64_t i = 0; i < n; ++i) pdx[i] = pdy[i] * unary_derivative(kOp(), px[i], py[i]);
    });
  });
}

void scalar_cpu(ScalarOp op, const Tensor& x, double scalar, const Tensor& out) {
  dispatch_float(x.dtype(), "scalar", [&](auto tag) {
    using T = decltype(tag);
    const T s = static_cast<T>(scalar);
    const int64_t n = x.numel();
    with_op<ScalarOp, kScalarOps>(op, [&](auto kOp) {
      const T* px = static_cast<const T*>(x.raw_data());
      T* po = static_cast<T*>(out.raw_data());
#pragma omp parallel for simd if (n >= kParallelElements)
      for (int64_t i = 0; i < n; ++i) po[i] = apply_scalar(kOp(), px[i], s);
    });
  });
}

// a[i] + b[i], or a[i] when b is absent.
template <typename T>
T sum_at(const T* a, const T* b, int64_t i) {
  return b ? a[i] + b[i] : a[i];
}

void silu_gated_sum_cpu(const Tensor& a, const Tensor& b, const Tensor& z, const Tensor& out) {
  dispatch_float(a.dtype(), "silu_gated_sum", [&](auto tag) {
    using T = decltype(tag);
    const T* pa = data_or_null<const T>(a);
    const T* pb = data_or_null<const T>(b);
    const T* pz = data_or_null<const T>(z);
    T* po = data_or_null<T>(out);
    const int64_t n = a.numel();
#pragma omp parallel for simd if (n >= kParallelElements)
    for (int64_t i = 0; i < n; ++i) po[i] = silu_gate(sum_at(pa, pb, i), pz[i]);
  });
}

void silu_gated_sum_backward_cpu(const Tensor& a, const Tensor& b, const Tensor& z, const Tensor& g,
                                 const Tensor& dsum, const Tensor& dz) {
  dispatch_float(a.dtype(), "silu_gated_sum_backward", [&](auto tag) {
    using T = decltype(tag);
    const T* pa = data_or_null<const T>(a);
    const T* pb = data_or_null<const T>(b);
    const T* pz = data_or_null<const T>(z);
    const T* pg = data_or_null<const T>(g);
    T* pdsum = data_or_null<T>(dsum);
    T* pdz = data_or_null<T>(dz);
    const int64_t n = a.numel();
#pragma omp parallel for simd if (n >= kParallelElements)
    for (int64_t i = 0; i < n; ++i) {
      T grad_sum, grad_z;
      silu_gate_backward(sum_at(pa, pb, i), pz[i], pg[i], grad_sum, grad_z);
      if (pdsum) pdsum[i] = grad_sum;
      if (pdz) pdz[i] = grad_z;
    }
  });
}

}  // namespace

KernelSlot<BinaryKernel> binary_kernel{"binary", &binary_cpu, nullptr};
KernelSlot<UnaryKernel> unary_kernel{"unary", &unary_cpu, nullptr};
KernelSlot<UnaryBackwardKernel> unary_backward_kernel{"unary_backward", &unary_backward_cpu, nullptr};
KernelSlot<ScalarKernel> scalar_kernel{"scalar", &scalar_cpu, nullptr};
KernelSlot<SiluGatedSumKernel> silu_gated_sum_kernel{"silu_gated_sum", &silu_gated_sum_cpu, nullptr};
KernelSlot<SiluGatedSumBackwardKernel> silu_gated_sum_backward_kernel{"silu_gated_sum_backward",
                                                                       &silu_gated_sum_backward_cpu, nullptr};

}  // namespace engine

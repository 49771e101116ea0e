// CPU reference kernels of softplus_linear: plain loops over rows (OpenMP,
// the softplus in vector lanes), float32 and float64.
#include "engine/ops/elementwise/elementwise_math.h"
#include "engine/ops/softplus_linear/softplus_linear_kernels.h"
#include "engine/ops/strided.h"
#include "engine/ops/vector_math.h"

namespace engine {

namespace {

void softplus_linear_cpu(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& y) {
  dispatch_float(y.dtype(), "softplus_linear", [&](auto tag) {
    using T = decltype(tag);
    const int64_t m = y.size(0), n = y.size(1), k = weight.size(1), stride = x.strides()[0];
    const T* px = data_or_null<const T>(x);
    const T* pw = data_or_null<const T>(weight);
    const T* pb = data_or_null<const T>(bias);
    T* py = data_or_null<T>(y);
#pragma omp parallel for if (m * n * k >= kParallelElements)
    for (int64_t i = 0; i < m; ++i) {
      const T* row = px + i * stride;
      T* out = py + i * n;
      for (int64_t j = 0; j < n; ++j) {
        T pre = pb ? pb[j] : T(0);
        for (int64_t c = 0; c < k; ++c) pre += row[c] * pw[j * k + c];
        out[j] = pre;
      }
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) out[j] = elementwise_math::apply_unary(UnaryOp::Softplus, out[j]);
    }
  });
}

void softplus_grad_cpu(const Tensor& y, const Tensor& dy, const Tensor& d_pre) {
  dispatch_float(y.dtype(), "softplus_grad", [&](auto tag) {
    using T = decltype(tag);
    const T* py = data_or_null<const T>(y);
    const T* pg = data_or_null<const T>(dy);
    T* pd = data_or_null<T>(d_pre);
    const int64_t count = y.numel();
#pragma omp parallel for simd if (count >= kParallelElements)
    for (int64_t i = 0; i < count; ++i) pd[i] = pg[i] * softplus_math::derivative_from_output(py[i]);
  });
}

}  // namespace

KernelSlot<SoftplusLinearKernel> softplus_linear_kernel{"softplus_linear", &softplus_linear_cpu, nullptr};
KernelSlot<SoftplusGradKernel> softplus_grad_kernel{"softplus_grad", &softplus_grad_cpu, nullptr};

}  // namespace engine

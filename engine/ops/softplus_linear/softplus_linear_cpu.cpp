// CPU reference kernels of softplus_linear: plain loops over rows (OpenMP),
// each in vector lanes over the row's outputs, float32 and float64.
#include <algorithm>
#include <vector>

#include "engine/ops/elementwise/elementwise_math.h"
#include "engine/ops/softplus_linear/softplus_linear_kernels.h"
#include "engine/ops/strided.h"
#include "engine/ops/vector_math.h"

namespace engine {

namespace {

// Row by row: the outputs start from the bias and take one input at a time
// (the contract's order of additions), from weight transposed to [K, N] so
// that each step is one contiguous vector loop over the row's outputs.
void softplus_linear_cpu(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& y) {
  dispatch_float(y.dtype(), "softplus_linear", [&](auto tag) {
    using T = decltype(tag);
    const int64_t m = y.size(0), n = y.size(1), k = weight.size(1), stride = x.strides()[0];
    const T* px = data_or_null<const T>(x);
    const T* pw = data_or_null<const T>(weight);
    const T* pb = data_or_null<const T>(bias);
    T* py = data_or_null<T>(y);
    std::vector<T> weight_t(static_cast<size_t>(k * n));
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t c = 0; c < k; ++c) weight_t[c * n + j] = pw[j * k + c];
    }
    const T* pwt = weight_t.data();
#pragma omp parallel for if (m * n * k >= kParallelElements)
    for (int64_t i = 0; i < m; ++i) {
      const T* row = px + i * stride;
      T* out = py + i * n;
      if (pb) {
        std::copy(pb, pb + n, out);
      } else {
        std::fill(out, out + n, T(0));
      }
      for (int64_t c = 0; c < k; ++c) {
        const T input = row[c];
        const T* w = pwt + c * n;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) out[j] += input * w[j];
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

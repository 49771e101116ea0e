// CPU reference kernels of the softmax family, parallel over rows (the ViT
// runs its attention softmax here).
#include <algorithm>
#include <cmath>

#include "engine/ops/rows.h"
#include "engine/ops/softmax/softmax_kernels.h"
#include "engine/ops/vector_math.h"

namespace engine {

namespace {

template <typename T>
void softmax_row(SoftmaxKind kind, const T* x, T* y, int64_t cols) {
  // Subtracting the row max keeps exp() from overflowing for large logits.
  const T max = *std::max_element(x, x + cols);
  T total = 0;
#pragma omp simd reduction(+ : total)
  for (int64_t i = 0; i < cols; ++i) {
    y[i] = std::exp(x[i] - max);
    total += y[i];
  }
  if (kind == SoftmaxKind::Softmax) {
    const T inv = T(1) / total;
    for (int64_t i = 0; i < cols; ++i) y[i] *= inv;
  } else {
    // (x - max) - log(total), not x - (max + log(total)): the latter rounds
    // log(total) to the precision of a large max.
    const T log_total = std::log(total);
    for (int64_t i = 0; i < cols; ++i) y[i] = (x[i] - max) - log_total;
  }
}

template <typename T>
void softmax_backward_row(SoftmaxKind kind, const T* y, const T* dy, T* dx, int64_t cols) {
  T total = 0;
  if (kind == SoftmaxKind::Softmax) {
    for (int64_t i = 0; i < cols; ++i) total += dy[i] * y[i];
    for (int64_t i = 0; i < cols; ++i) dx[i] = y[i] * (dy[i] - total);
  } else {
    for (int64_t i = 0; i < cols; ++i) total += dy[i];
#pragma omp simd
    for (int64_t i = 0; i < cols; ++i) dx[i] = dy[i] - std::exp(y[i]) * total;
  }
}

void softmax_forward_cpu(SoftmaxKind kind, const Tensor& x, const Tensor& y) {
  dispatch_float(x.dtype(), "softmax", [&](auto tag) {
    using T = decltype(tag);
    const int64_t rows = x.shape()[0], cols = x.shape()[1];
    const T* px = static_cast<const T*>(x.raw_data());
    T* py = static_cast<T*>(y.raw_data());
#pragma omp parallel for if (rows * cols >= kParallelElements)
    for (int64_t r = 0; r < rows; ++r) softmax_row(kind, px + r * cols, py + r * cols, cols);
  });
}

void softmax_backward_cpu(SoftmaxKind kind, const Tensor& y, const Tensor& dy, const Tensor& dx) {
  dispatch_float(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = decltype(tag);
    const int64_t rows = y.shape()[0], cols = y.shape()[1];
    const T* py = static_cast<const T*>(y.raw_data());
    const T* pdy = static_cast<const T*>(dy.raw_data());
    T* pdx = static_cast<T*>(dx.raw_data());
#pragma omp parallel for if (rows * cols >= kParallelElements)
    for (int64_t r = 0; r < rows; ++r) {
      softmax_backward_row(kind, py + r * cols, pdy + r * cols, pdx + r * cols, cols);
    }
  });
}

}  // namespace

KernelSlot<SoftmaxForwardKernel> softmax_forward_kernel{"softmax_forward", &softmax_forward_cpu, nullptr};
KernelSlot<SoftmaxBackwardKernel> softmax_backward_kernel{"softmax_backward", &softmax_backward_cpu, nullptr};

}  // namespace engine

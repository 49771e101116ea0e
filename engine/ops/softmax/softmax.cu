// CUDA kernels of the softmax family: one block per row, block reductions for
// the row's max and sums.
#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/softmax/softmax_kernels.h"

namespace engine {

namespace {

template <typename T>
__global__ void softmax_forward_kernel_impl(SoftmaxKind kind, const T* x, T* y, int64_t rows, int64_t cols) {
  for (int64_t r : block_stride(rows)) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    const RowExpSum<T> sums = block_row_exp_sum(xr, cols);
    if (kind == SoftmaxKind::Softmax) {
      const T inv = T(1) / sums.total;
      for (int64_t i : thread_stride(cols)) yr[i] = exp(xr[i] - sums.max) * inv;
    } else {
      // (x - max) - log(total), as on the CPU: keeps precision for a large max.
      const T log_total = log(sums.total);
      for (int64_t i : thread_stride(cols)) yr[i] = (xr[i] - sums.max) - log_total;
    }
  }
}

//   softmax:     dx = y * (dy - sum(dy * y))
//   log_softmax: dx = dy - exp(y) * sum(dy)
template <typename T>
__global__ void softmax_backward_kernel_impl(SoftmaxKind kind, const T* y, const T* dy, T* dx, int64_t rows,
                                             int64_t cols) {
  const bool plain = kind == SoftmaxKind::Softmax;
  for (int64_t r : block_stride(rows)) {
    const int64_t at = r * cols;
    T total = 0;
    for (int64_t i : thread_stride(cols)) total += plain ? dy[at + i] * y[at + i] : dy[at + i];
    total = block_sum(total);
    for (int64_t i : thread_stride(cols)) {
      dx[at + i] = plain ? y[at + i] * (dy[at + i] - total) : dy[at + i] - exp(y[at + i]) * total;
    }
  }
}

void softmax_forward_cuda(SoftmaxKind kind, const Tensor& x, const Tensor& y) {
  DeviceGuard guard(y);
  const int64_t rows = x.shape()[0], cols = x.shape()[1];
  dispatch_float(x.dtype(), "softmax", [&](auto tag) {
    using T = decltype(tag);
    launch_rows(rows, cols, softmax_forward_kernel_impl<T>, kind, data_of<T>(x), mutable_data_of<T>(y), rows, cols);
  });
}

void softmax_backward_cuda(SoftmaxKind kind, const Tensor& y, const Tensor& dy, const Tensor& dx) {
  DeviceGuard guard(dx);
  const int64_t rows = y.shape()[0], cols = y.shape()[1];
  dispatch_float(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = decltype(tag);
    launch_rows(rows, cols, softmax_backward_kernel_impl<T>, kind, data_of<T>(y), data_of<T>(dy),
                mutable_data_of<T>(dx), rows, cols);
  });
}

const bool registered = [] {
  softmax_forward_kernel.cuda = &softmax_forward_cuda;
  softmax_backward_kernel.cuda = &softmax_backward_cuda;
  return true;
}();

}  // namespace

}  // namespace engine

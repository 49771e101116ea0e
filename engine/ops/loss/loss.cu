// CUDA kernels of the fused softmax cross-entropy: the forward is one block
// per row; the backward one thread per logit.
#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/loss/loss_kernels.h"

namespace engine {

namespace {

// losses[r] = log_total - (1 - s)(x[label] - max) - s (mean(x) - max), as on
// the CPU: terms measured from the row max keep their precision.
template <typename T>
__global__ void cross_entropy_forward_kernel_impl(const T* logits, const int64_t* labels, T s, T* losses, T* lse,
                                                  int64_t rows, int64_t classes) {
  for (int64_t r : block_stride(rows)) {
    const T* x = logits + r * classes;
    const RowExpSum<T> sums = block_row_exp_sum(x, classes);
    T total = 0;
    for (int64_t c : thread_stride(classes)) total += x[c];
    const T mean = block_sum(total) / T(classes);
    if (threadIdx.x == 0) {
      const T log_total = log(sums.total);
      losses[r] = log_total - (T(1) - s) * (x[labels[r]] - sums.max) - s * (mean - sums.max);
      lse[r] = sums.max + log_total;
    }
  }
}

// dlogits[r, c] = dlosses[r] * (exp(x[r, c] - lse[r]) - s / classes), minus
// dlosses[r] * (1 - s) at the label, in the CPU's order of operations.
template <typename T>
__global__ void cross_entropy_backward_kernel_impl(const T* logits, const int64_t* labels, T s, const T* lse,
                                                   const T* dlosses, T* dlogits, int64_t rows, int64_t classes) {
  const T uniform_target = s / T(classes);
  for (int64_t i : grid_stride(rows * classes)) {
    const int64_t r = i / classes, c = i % classes;
    T grad = dlosses[r] * (exp(logits[i] - lse[r]) - uniform_target);
    if (c == labels[r]) grad -= dlosses[r] * (T(1) - s);
    dlogits[i] = grad;
  }
}

void cross_entropy_forward_cuda(const Tensor& logits, const Tensor& labels, double smoothing, const Tensor& losses,
                                const Tensor& lse) {
  DeviceGuard guard(logits);
  const int64_t rows = logits.shape()[0], classes = logits.shape()[1];
  dispatch_float(logits.dtype(), "cross_entropy", [&](auto tag) {
    using T = decltype(tag);
    launch_rows(rows, classes, cross_entropy_forward_kernel_impl<T>, data_of<T>(logits), data_of<int64_t>(labels),
                static_cast<T>(smoothing), mutable_data_of<T>(losses), mutable_data_of<T>(lse), rows, classes);
  });
}

void cross_entropy_backward_cuda(const Tensor& logits, const Tensor& labels, double smoothing, const Tensor& lse,
                                 const Tensor& dlosses, const Tensor& dlogits) {
  DeviceGuard guard(logits);
  const int64_t rows = logits.shape()[0], classes = logits.shape()[1];
  dispatch_float(logits.dtype(), "cross_entropy_backward", [&](auto tag) {
    using T = decltype(tag);
    launch_1d(rows * classes, cross_entropy_backward_kernel_impl<T>, data_of<T>(logits), data_of<int64_t>(labels),
              static_cast<T>(smoothing), data_of<T>(lse), data_of<T>(dlosses), mutable_data_of<T>(dlogits), rows,
              classes);
  });
}

const bool registered = [] {
  cross_entropy_forward_kernel.cuda = &cross_entropy_forward_cuda;
  cross_entropy_backward_kernel.cuda = &cross_entropy_backward_cuda;
  return true;
}();

}  // namespace

}  // namespace engine

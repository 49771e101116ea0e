// CPU reference kernels of the fused softmax cross-entropy, parallel over rows.
#include <algorithm>
#include <cmath>

#include "engine/ops/loss/loss_kernels.h"
#include "engine/ops/rows.h"

namespace engine {

namespace {

// log(sum(exp(x))) = max + log_total, kept apart so that values near the
// max lose no precision when measured relative to it.
template <typename T>
struct LogSumExp {
  T max;
  T log_total;
};

template <typename T>
LogSumExp<T> logsumexp(const T* x, int64_t n) {
  const T max = *std::max_element(x, x + n);  // keeps exp() from overflowing
  T total = 0;
  for (int64_t i = 0; i < n; ++i) total += std::exp(x[i] - max);
  return {max, std::log(total)};
}

void cross_entropy_forward_cpu(const Tensor& logits, const Tensor& labels, double smoothing, const Tensor& losses,
                               const Tensor& lse) {
  dispatch_float(logits.dtype(), "cross_entropy", [&](auto tag) {
    using T = decltype(tag);
    const int64_t rows = logits.shape()[0], classes = logits.shape()[1];
    const T* px = static_cast<const T*>(logits.raw_data());
    const int64_t* plabel = static_cast<const int64_t*>(labels.raw_data());
    T* ploss = static_cast<T*>(losses.raw_data());
    T* plse = static_cast<T*>(lse.raw_data());
    const T s = static_cast<T>(smoothing);
#pragma omp parallel for if (rows * classes >= kParallelElements)
    for (int64_t r = 0; r < rows; ++r) {
      const T* x = px + r * classes;
      const LogSumExp<T> lse_r = logsumexp(x, classes);
      T total = 0;
      for (int64_t c = 0; c < classes; ++c) total += x[c];
      const T mean = total / T(classes);
      ploss[r] = lse_r.log_total - (T(1) - s) * (x[plabel[r]] - lse_r.max) - s * (mean - lse_r.max);
      plse[r] = lse_r.max + lse_r.log_total;
    }
  });
}

void cross_entropy_backward_cpu(const Tensor& logits, const Tensor& labels, double smoothing, const Tensor& lse,
                                const Tensor& dlosses, const Tensor& dlogits) {
  dispatch_float(logits.dtype(), "cross_entropy_backward", [&](auto tag) {
    using T = decltype(tag);
    const int64_t rows = logits.shape()[0], classes = logits.shape()[1];
    const T* px = static_cast<const T*>(logits.raw_data());
    const int64_t* plabel = static_cast<const int64_t*>(labels.raw_data());
    const T* plse = static_cast<const T*>(lse.raw_data());
    const T* pdl = static_cast<const T*>(dlosses.raw_data());
    T* pdx = static_cast<T*>(dlogits.raw_data());
    const T s = static_cast<T>(smoothing);
    const T uniform_target = s / T(classes);
#pragma omp parallel for if (rows * classes >= kParallelElements)
    for (int64_t r = 0; r < rows; ++r) {
      const T* x = px + r * classes;
      T* dx = pdx + r * classes;
      for (int64_t c = 0; c < classes; ++c) dx[c] = pdl[r] * (std::exp(x[c] - plse[r]) - uniform_target);
      dx[plabel[r]] -= pdl[r] * (T(1) - s);
    }
  });
}

}  // namespace

KernelSlot<CrossEntropyForwardKernel> cross_entropy_forward_kernel{"cross_entropy_forward",
                                                                   &cross_entropy_forward_cpu, nullptr};
KernelSlot<CrossEntropyBackwardKernel> cross_entropy_backward_kernel{"cross_entropy_backward",
                                                                     &cross_entropy_backward_cpu, nullptr};

}  // namespace engine

// CPU reference kernels of layer normalisation, parallel over rows.
#include <omp.h>

#include <cmath>
#include <vector>

#include "engine/ops/norm/layernorm_kernels.h"
#include "engine/ops/rows.h"

namespace engine {

namespace {

void layer_norm_forward_cpu(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& y,
                            const Tensor& mean, const Tensor& rstd) {
  dispatch_float(x.dtype(), "layer_norm", [&](auto tag) {
    using T = decltype(tag);
    const int64_t rows = x.shape()[0], cols = x.shape()[1];
    const T* px = data_or_null<T>(x);
    const T* pw = data_or_null<T>(weight);
    const T* pb = data_or_null<T>(bias);
    T* py = data_or_null<T>(y);
    T* pmean = data_or_null<T>(mean);
    T* prstd = data_or_null<T>(rstd);
#pragma omp parallel for if (rows * cols >= kParallelElements)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = px + r * cols;
      T* yr = py + r * cols;
      T m = 0;
      for (int64_t i = 0; i < cols; ++i) m += xr[i];
      m /= T(cols);
      T var = 0;  // two passes: no cancellation when |mean| >> std
      for (int64_t i = 0; i < cols; ++i) var += (xr[i] - m) * (xr[i] - m);
      var /= T(cols);
      const T rs = T(1) / std::sqrt(var + T(eps));
      for (int64_t i = 0; i < cols; ++i) yr[i] = (xr[i] - m) * rs * (pw ? pw[i] : T(1)) + (pb ? pb[i] : T(0));
      pmean[r] = m;
      prstd[r] = rs;
    }
  });
}

// dx for one row; adds dy * xhat and dy into sum_w / sum_b when they are not null.
template <typename T>
void layer_norm_backward_row(const T* x, const T* w, T mean, T rstd, const T* dy, const T* dx_other, T* dx,
                             T* sum_w, T* sum_b, int64_t cols) {
  T sum_g = 0, sum_gx = 0;
  for (int64_t i = 0; i < cols; ++i) {
    const T xhat = (x[i] - mean) * rstd;
    const T g = dy[i] * (w ? w[i] : T(1));
    sum_g += g;
    sum_gx += g * xhat;
    if (sum_w) sum_w[i] += dy[i] * xhat;
    if (sum_b) sum_b[i] += dy[i];
  }
  const T mean_g = sum_g / T(cols), mean_gx = sum_gx / T(cols);
  for (int64_t i = 0; i < cols; ++i) {
    const T xhat = (x[i] - mean) * rstd;
    dx[i] = rstd * (dy[i] * (w ? w[i] : T(1)) - mean_g - xhat * mean_gx);
    if (dx_other) dx[i] += dx_other[i];
  }
}

// out[c] = sum over threads of partials[thread][c], in thread order (deterministic).
template <typename T>
void sum_partials(const std::vector<T>& partials, int64_t cols, T* out) {
  if (!out) return;
  for (int64_t c = 0; c < cols; ++c) out[c] = T(0);
  for (size_t start = 0; start < partials.size(); start += cols) {
    for (int64_t c = 0; c < cols; ++c) out[c] += partials[start + c];
  }
}

void layer_norm_backward_cpu(const Tensor& x, const Tensor& weight, const Tensor& mean, const Tensor& rstd,
                             const Tensor& dy, const Tensor& dx_other, const Tensor& dx, const Tensor& dweight,
                             const Tensor& dbias) {
  dispatch_float(x.dtype(), "layer_norm_backward", [&](auto tag) {
    using T = decltype(tag);
    const int64_t rows = x.shape()[0], cols = x.shape()[1];
    const T* px = data_or_null<T>(x);
    const T* pw = data_or_null<T>(weight);
    const T* pmean = data_or_null<T>(mean);
    const T* prstd = data_or_null<T>(rstd);
    const T* pdy = data_or_null<T>(dy);
    const T* pother = data_or_null<T>(dx_other);
    T* pdx = data_or_null<T>(dx);
    // dweight and dbias are column sums over all rows: each thread sums its
    // own rows into a private slice, then the slices are added up.
    const int64_t threads = omp_get_max_threads();
    std::vector<T> partial_w(dweight.defined() ? threads * cols : 0);
    std::vector<T> partial_b(dbias.defined() ? threads * cols : 0);
#pragma omp parallel if (rows * cols >= kParallelElements)
    {
      const int64_t slice = omp_get_thread_num() * cols;
      T* sum_w = partial_w.empty() ? nullptr : partial_w.data() + slice;
      T* sum_b = partial_b.empty() ? nullptr : partial_b.data() + slice;
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t at = r * cols;
        layer_norm_backward_row(px + at, pw, pmean[r], prstd[r], pdy + at, pother ? pother + at : nullptr, pdx + at,
                                sum_w, sum_b, cols);
      }
    }
    sum_partials(partial_w, cols, data_or_null<T>(dweight));
    sum_partials(partial_b, cols, data_or_null<T>(dbias));
  });
}

}  // namespace

KernelSlot<LayerNormForwardKernel> layer_norm_forward_kernel{"layer_norm_forward", &layer_norm_forward_cpu,
                                                             nullptr};
KernelSlot<LayerNormBackwardKernel> layer_norm_backward_kernel{"layer_norm_backward", &layer_norm_backward_cpu,
                                                               nullptr};

}  // namespace engine

// CUDA kernels of layer normalisation. Forward and dx: one block per row.
// dweight and dbias are column sums over all rows, computed deterministically
// without atomics: blocks sum fixed chunks of rows into partial sums, then a
// second kernel adds up each column's partials in chunk order.
#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/norm/layernorm_kernels.h"

namespace engine {

namespace {

template <typename T>
__global__ void layer_norm_forward_kernel_impl(const T* x, const T* w, const T* b, T eps, T* y, T* mean, T* rstd,
                                               int64_t rows, int64_t cols) {
  for (int64_t r : block_stride(rows)) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    T total = 0;
    for (int64_t i : thread_stride(cols)) total += xr[i];
    const T m = block_sum(total) / T(cols);
    T squares = 0;  // two passes: no cancellation when |mean| >> std
    for (int64_t i : thread_stride(cols)) squares += (xr[i] - m) * (xr[i] - m);
    const T rs = T(1) / sqrt(block_sum(squares) / T(cols) + eps);
    for (int64_t i : thread_stride(cols)) yr[i] = (xr[i] - m) * rs * (w ? w[i] : T(1)) + (b ? b[i] : T(0));
    if (threadIdx.x == 0) {
      mean[r] = m;
      rstd[r] = rs;
    }
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) per row, g = dy * weight.
template <typename T>
__global__ void layer_norm_dx_kernel(const T* x, const T* w, const T* mean, const T* rstd, const T* dy, T* dx,
                                     int64_t rows, int64_t cols) {
  for (int64_t r : block_stride(rows)) {
    const int64_t at = r * cols;
    const T m = mean[r], rs = rstd[r];
    T sum_g = 0, sum_gx = 0;
    for (int64_t i : thread_stride(cols)) {
      const T xhat = (x[at + i] - m) * rs;
      const T g = dy[at + i] * (w ? w[i] : T(1));
      sum_g += g;
      sum_gx += g * xhat;
    }
    const T mean_g = block_sum(sum_g) / T(cols), mean_gx = block_sum(sum_gx) / T(cols);
    for (int64_t i : thread_stride(cols)) {
      const T xhat = (x[at + i] - m) * rs;
      dx[at + i] = rs * (dy[at + i] * (w ? w[i] : T(1)) - mean_g - xhat * mean_gx);
    }
  }
}

// Block (column block x, chunk y): each thread sums dy * xhat and dy of one
// column over the chunk's rows into partial_w / partial_b [chunks, cols]
// (either may be null).
template <typename T>
__global__ void layer_norm_param_partials_kernel(const T* x, const T* mean, const T* rstd, const T* dy,
                                                 T* partial_w, T* partial_b, int64_t rows, int64_t cols,
                                                 int64_t rows_per_chunk) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const int64_t chunk = blockIdx.y;
  const int64_t end = min(rows, (chunk + 1) * rows_per_chunk);
  T sum_w = 0, sum_b = 0;
  for (int64_t r = chunk * rows_per_chunk; r < end; ++r) {
    const int64_t at = r * cols + c;  // threads of a warp read neighbouring columns
    const T xhat = (x[at] - mean[r]) * rstd[r];
    sum_w += dy[at] * xhat;
    sum_b += dy[at];
  }
  if (partial_w) partial_w[chunk * cols + c] = sum_w;
  if (partial_b) partial_b[chunk * cols + c] = sum_b;
}

void layer_norm_forward_cuda(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& y,
                             const Tensor& mean, const Tensor& rstd) {
  DeviceGuard guard(y);
  const int64_t rows = x.shape()[0], cols = x.shape()[1];
  dispatch_float(x.dtype(), "layer_norm", [&](auto tag) {
    using T = decltype(tag);
    launch_rows(rows, cols, layer_norm_forward_kernel_impl<T>, data_of<T>(x), data_or_null<const T>(weight),
                data_or_null<const T>(bias), static_cast<T>(eps), mutable_data_of<T>(y), mutable_data_of<T>(mean),
                mutable_data_of<T>(rstd), rows, cols);
  });
}

// Rows are split into at most this many chunks for the parameter gradients.
constexpr int64_t kMaxChunks = 128;

void layer_norm_backward_cuda(const Tensor& x, const Tensor& weight, const Tensor& mean, const Tensor& rstd,
                              const Tensor& dy, const Tensor& dx, const Tensor& dweight, const Tensor& dbias) {
  DeviceGuard guard(dx);
  const int64_t rows = x.shape()[0], cols = x.shape()[1];
  dispatch_float(x.dtype(), "layer_norm_backward", [&](auto tag) {
    using T = decltype(tag);
    launch_rows(rows, cols, layer_norm_dx_kernel<T>, data_of<T>(x), data_or_null<const T>(weight), data_of<T>(mean),
                data_of<T>(rstd), data_of<T>(dy), mutable_data_of<T>(dx), rows, cols);
    if (!dweight.defined() && !dbias.defined()) return;
    const int64_t rows_per_chunk = (rows + kMaxChunks - 1) / kMaxChunks;
    const int64_t chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
    auto partials_for = [&](const Tensor& grad) {
      return grad.defined() ? Tensor::empty({chunks, cols}, x.dtype(), x.device()) : Tensor();
    };
    const Tensor partial_w = partials_for(dweight), partial_b = partials_for(dbias);
    const dim3 grid(static_cast<unsigned>((cols + kThreads - 1) / kThreads), static_cast<unsigned>(chunks));
    layer_norm_param_partials_kernel<T><<<grid, kThreads, 0, current_stream()>>>(
        data_of<T>(x), data_of<T>(mean), data_of<T>(rstd), data_of<T>(dy), data_or_null<T>(partial_w),
        data_or_null<T>(partial_b), rows, cols, rows_per_chunk);
    CUDA_CHECK_LAUNCH();
    for (const auto& [partials, grad] : {std::pair(partial_w, dweight), std::pair(partial_b, dbias)}) {
      if (grad.defined()) {
        sum_partial_rows(data_of<T>(partials), 1, chunks, cols, mutable_data_of<T>(grad));
      }
    }
  });
}

const bool registered = [] {
  layer_norm_forward_kernel.cuda = &layer_norm_forward_cuda;
  layer_norm_backward_kernel.cuda = &layer_norm_backward_cuda;
  return true;
}();

}  // namespace

}  // namespace engine

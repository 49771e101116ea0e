// CUDA kernels of the softmax family, in two versions:
//
//  * register rows (rows of at most 1,024 elements: attention's probabilities,
//    a classifier's logits): one warp per row, lane l holding columns l + 32 j
//    in registers. The row is read once and written once, its exponentials
//    are computed once, and the reductions are shuffles (warp rows, as in
//    cuda_utils.cuh: kRowWarps rows per block).
//  * generic (longer rows): one block per row (launch_rows), block
//    reductions for the row's max and sums, the row read from memory per pass.
#include <type_traits>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/softmax/softmax_kernels.h"

namespace engine {

namespace {

// ---------------------------------------------------------------- register rows

constexpr int kMaxColumnsPerLane = 32;

// Columns lane + 32 j of a row into v[j]; `pad` past the row's end.
template <typename T, int kPerLane>
__device__ void load_lane_columns(const T* row, int64_t cols, T pad, T (&v)[kPerLane]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int64_t i = lane + 32 * j;
    v[j] = i < cols ? row[i] : pad;
  }
}

template <typename T, int kPerLane>
__device__ void store_lane_columns(const T (&v)[kPerLane], int64_t cols, T* row) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int64_t i = lane + 32 * j;
    if (i < cols) row[i] = v[j];
  }
}

template <typename T, int kPerLane>
__global__ void __launch_bounds__(kRowWarps * 32)
    softmax_forward_register_rows(SoftmaxKind kind, const T* x, T* y, int64_t rows, int64_t cols) {
  for (int64_t r : warp_row_stride(rows)) {
    T v[kPerLane];
    load_lane_columns(x + r * cols, cols, T(-INFINITY), v);  // exp(-inf - max) = 0: padding adds nothing
    T max = v[0];
#pragma unroll
    for (int j = 1; j < kPerLane; ++j) max = MaxOp{}(max, v[j]);
    max = warp_all_reduce(max, MaxOp{});
    T total = 0;
    if (kind == SoftmaxKind::Softmax) {
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        v[j] = exp(v[j] - max);
        total += v[j];
      }
      const T inv = T(1) / warp_all_reduce(total, SumOp{});
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) v[j] *= inv;
    } else {
      // (x - max) - log(total), as on the CPU: keeps precision for a large max.
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        v[j] -= max;
        total += exp(v[j]);
      }
      const T log_total = log(warp_all_reduce(total, SumOp{}));
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) v[j] -= log_total;
    }
    store_lane_columns(v, cols, y + r * cols);
  }
}

template <typename T, int kPerLane>
__global__ void __launch_bounds__(kRowWarps * 32)
    softmax_backward_register_rows(SoftmaxKind kind, const T* y, const T* dy, T* dx, int64_t rows, int64_t cols) {
  const bool plain = kind == SoftmaxKind::Softmax;
  for (int64_t r : warp_row_stride(rows)) {
    T yr[kPerLane], g[kPerLane];
    load_lane_columns(y + r * cols, cols, T(0), yr);  // zero padding adds nothing to either sum
    load_lane_columns(dy + r * cols, cols, T(0), g);
    T total = 0;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) total += plain ? g[j] * yr[j] : g[j];
    total = warp_all_reduce(total, SumOp{});
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) g[j] = plain ? yr[j] * (g[j] - total) : g[j] - exp(yr[j]) * total;
    store_lane_columns(g, cols, dx + r * cols);
  }
}

// Calls f(std::integral_constant<int, K>) with the smallest K in 1, 2, 4,
// ..., 32 such that 32 K columns hold a row of `cols`.
template <typename F>
void with_columns_per_lane(int64_t cols, F&& f) {
  if (cols <= 32) return f(std::integral_constant<int, 1>{});
  if (cols <= 64) return f(std::integral_constant<int, 2>{});
  if (cols <= 128) return f(std::integral_constant<int, 4>{});
  if (cols <= 256) return f(std::integral_constant<int, 8>{});
  if (cols <= 512) return f(std::integral_constant<int, 16>{});
  return f(std::integral_constant<int, kMaxColumnsPerLane>{});
}

bool fits_register_rows(int64_t cols) { return cols <= 32 * kMaxColumnsPerLane; }

template <typename... Params, typename... Args>
void launch_register_rows(int64_t rows, void (*kernel)(Params...), Args... args) {
  if (rows <= 0) return;
  kernel<<<row_blocks(rows, kMaxBlocks), kRowWarps * 32, 0, current_stream()>>>(args...);
  CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------- generic

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
    if (!fits_register_rows(cols)) {
      return launch_rows(rows, cols, softmax_forward_kernel_impl<T>, kind, data_of<T>(x), mutable_data_of<T>(y), rows,
                         cols);
    }
    with_columns_per_lane(cols, [&](auto per_lane) {
      constexpr int kPerLane = decltype(per_lane)::value;
      launch_register_rows(rows, softmax_forward_register_rows<T, kPerLane>, kind, data_of<T>(x), mutable_data_of<T>(y),
                           rows, cols);
    });
  });
}

void softmax_backward_cuda(SoftmaxKind kind, const Tensor& y, const Tensor& dy, const Tensor& dx) {
  DeviceGuard guard(dx);
  const int64_t rows = y.shape()[0], cols = y.shape()[1];
  dispatch_float(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = decltype(tag);
    if (!fits_register_rows(cols)) {
      return launch_rows(rows, cols, softmax_backward_kernel_impl<T>, kind, data_of<T>(y), data_of<T>(dy),
                         mutable_data_of<T>(dx), rows, cols);
    }
    with_columns_per_lane(cols, [&](auto per_lane) {
      constexpr int kPerLane = decltype(per_lane)::value;
      launch_register_rows(rows, softmax_backward_register_rows<T, kPerLane>, kind, data_of<T>(y), data_of<T>(dy),
                           mutable_data_of<T>(dx), rows, cols);
    });
  });
}

const bool registered = [] {
  softmax_forward_kernel.cuda = &softmax_forward_cuda;
  softmax_backward_kernel.cuda = &softmax_backward_cuda;
  return true;
}();

}  // namespace

}  // namespace engine

// CUDA kernels of layer normalisation, in two versions:
//
//  * register rows (float32, rows of at most 1024 elements, a multiple of 4,
//    16-byte aligned: every ViT): one warp per row, the row read once into
//    registers as float4s (lane l holds columns 4 (l + 32 j)), mean and
//    variance from the registers, shuffles only; y written as float32 or
//    straight as bfloat16 (a bf16 GEMM's operand). The backward computes dx and
//    the weight/bias gradients in the same pass: each warp keeps its columns'
//    running sums of dy * xhat and dy over the rows it handles, and each block
//    writes one row of partial sums.
//  * generic (any length, float64): one block per row (or a warp for many
//    short rows, see launch_rows), reading the row from memory per pass; the
//    weight/bias gradients come from a separate kernel that sums fixed chunks
//    of rows per column.
//
// Either way dweight and dbias are deterministic, without atomics: the
// partial sums of fixed row sets are added up in order by sum_partial_rows.
#include <algorithm>
#include <utility>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/copy/copy.h"
#include "engine/ops/norm/layernorm_kernels.h"

namespace engine {

namespace {

// ---------------------------------------------------------------- generic

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
__global__ void layer_norm_dx_kernel(const T* x, const T* w, const T* mean, const T* rstd, const T* dy,
                                     const T* dx_other, T* dx, int64_t rows, int64_t cols) {
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
      const T other = dx_other ? dx_other[at + i] : T(0);
      dx[at + i] = rs * (dy[at + i] * (w ? w[i] : T(1)) - mean_g - xhat * mean_gx) + other;
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

// ---------------------------------------------------------------- register rows

constexpr int kMaxRowPacks = 8;      // float4s per lane: rows of up to 32 * 4 * 8 = 1024 elements
constexpr int kMaxRowBlocks = 1024;  // blocks (so partial-sum rows) of the backward, whatever the row count

// A lane's share of a row: float4 j covers columns 4 (lane + 32 j); columns
// past the row's end are left zero (so they add nothing to sums).
template <int Packs>
struct RowSlice {
  float4 v[Packs];

  __device__ static int column(int j) { return 4 * (threadIdx.x % 32 + 32 * j); }

  __device__ void load(const float* row, int cols) {
#pragma unroll
    for (int j = 0; j < Packs; ++j) {
      v[j] = column(j) < cols ? *reinterpret_cast<const float4*>(row + column(j)) : make_float4(0, 0, 0, 0);
    }
  }
  // Loads the affine parameter row, or ones where there is none.
  __device__ void load_or_ones(const float* row, int cols) {
    if (row != nullptr) return load(row, cols);
#pragma unroll
    for (int j = 0; j < Packs; ++j) v[j] = make_float4(1, 1, 1, 1);
  }
  __device__ void store(float* row, int cols) const {
#pragma unroll
    for (int j = 0; j < Packs; ++j) {
      if (column(j) < cols) *reinterpret_cast<float4*>(row + column(j)) = v[j];
    }
  }
  // The row as bfloat16 (rounded to nearest even, as .to(BF16)): 8 bytes per float4.
  __device__ void store(__nv_bfloat16* row, int cols) const {
#pragma unroll
    for (int j = 0; j < Packs; ++j) {
      if (column(j) < cols) {
        const __nv_bfloat162 lo = __floats2bfloat162_rn(v[j].x, v[j].y), hi = __floats2bfloat162_rn(v[j].z, v[j].w);
        __nv_bfloat162* at = reinterpret_cast<__nv_bfloat162*>(row + column(j));
        at[0] = lo;
        at[1] = hi;
      }
    }
  }
  // f(value, column) for every element this lane holds inside the row.
  template <typename F>
  __device__ void for_each(int cols, F f) {
#pragma unroll
    for (int j = 0; j < Packs; ++j) {
      if (column(j) < cols) {
        f(v[j].x, j, 0);
        f(v[j].y, j, 1);
        f(v[j].z, j, 2);
        f(v[j].w, j, 3);
      }
    }
  }
};

__device__ inline float& element(float4& p, int k) { return (&p.x)[k]; }

// The row's mean and 1/sqrt(var + eps) from the registers (two passes: no
// cancellation when |mean| >> std), every lane gets both.
template <int Packs>
__device__ float2 row_moments(RowSlice<Packs>& x, int cols, float eps) {
  float total = 0;
  x.for_each(cols, [&](float v, int, int) { total += v; });
  const float mean = warp_all_reduce(total, SumOp{}) / cols;
  float squares = 0;
  x.for_each(cols, [&](float v, int, int) { squares += (v - mean) * (v - mean); });
  return {mean, rsqrtf(warp_all_reduce(squares, SumOp{}) / cols + eps)};
}

// Out: float, or __nv_bfloat16 (y as the operand of a bf16 GEMM).
template <int Packs, typename Out>
__global__ void __launch_bounds__(kRowWarps * 32)
    layer_norm_forward_rows_kernel(const float* x, const float* w, const float* b, float eps, Out* y, float* mean,
                                   float* rstd, int64_t rows, int cols) {
  RowSlice<Packs> weight, bias;
  weight.load_or_ones(w, cols);
  if (b != nullptr) bias.load(b, cols);  // else unused
  for (int64_t r : warp_row_stride(rows)) {
    RowSlice<Packs> row;
    row.load(x + r * cols, cols);
    const float2 m = row_moments(row, cols, eps);
    row.for_each(cols, [&](float& v, int j, int k) {
      v = (v - m.x) * m.y * element(weight.v[j], k) + (b != nullptr ? element(bias.v[j], k) : 0.f);
    });
    row.store(y + r * cols, cols);
    if (threadIdx.x % 32 == 0) {
      mean[r] = m.x;
      rstd[r] = m.y;
    }
  }
}

// Adds up the block's warps' slices (warp order: deterministic) into out[cols].
template <int Packs>
__device__ void block_column_sums(const RowSlice<Packs>& mine, int cols, float* out) {
  __shared__ float4 slices[kRowWarps][kMaxRowPacks * 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // a previous call may still be reading slices
#pragma unroll
  for (int j = 0; j < Packs; ++j) slices[warp][lane + 32 * j] = mine.v[j];
  __syncthreads();
  for (int p = threadIdx.x; p < Packs * 32 && 4 * p < cols; p += blockDim.x) {
    float4 total = slices[0][p];
    for (int k = 1; k < kRowWarps; ++k) {
      total.x += slices[k][p].x;
      total.y += slices[k][p].y;
      total.z += slices[k][p].z;
      total.w += slices[k][p].w;
    }
    *reinterpret_cast<float4*>(out + 4 * p) = total;
  }
}

// dx per row as layer_norm_dx_kernel (plus dx_other, when given), and this block's partial sums of
// dy * xhat (partial_w) and dy (partial_b) over its rows, one [cols] row per
// block (either may be null). Warp k of block i handles rows i kRowWarps + k,
// advancing by the grid's warps: a fixed split of the rows for a given grid.
template <int Packs>
__global__ void __launch_bounds__(kRowWarps * 32)
    layer_norm_backward_rows_kernel(const float* x, const float* w, const float* mean, const float* rstd,
                                    const float* dy, const float* dx_other, float* dx, float* partial_w,
                                    float* partial_b, int64_t rows, int cols) {
  RowSlice<Packs> weight, sum_w{}, sum_b{};
  weight.load_or_ones(w, cols);
  for (int64_t r : warp_row_stride(rows)) {
    RowSlice<Packs> xhat, g;
    xhat.load(x + r * cols, cols);
    g.load(dy + r * cols, cols);
    const float m = mean[r], rs = rstd[r];
    float total_g = 0, total_gx = 0;
    xhat.for_each(cols, [&](float& v, int j, int k) {
      v = (v - m) * rs;
      const float d = element(g.v[j], k);
      element(sum_w.v[j], k) += d * v;
      element(sum_b.v[j], k) += d;
      const float gw = d * element(weight.v[j], k);
      element(g.v[j], k) = gw;
      total_g += gw;
      total_gx += gw * v;
    });
    const float mean_g = warp_all_reduce(total_g, SumOp{}) / cols;
    const float mean_gx = warp_all_reduce(total_gx, SumOp{}) / cols;
    g.for_each(cols, [&](float& v, int j, int k) { v = rs * (v - mean_g - element(xhat.v[j], k) * mean_gx); });
    if (dx_other != nullptr) {  // xhat's registers are free again
      xhat.load(dx_other + r * cols, cols);
      g.for_each(cols, [&](float& v, int j, int k) { v += element(xhat.v[j], k); });
    }
    g.store(dx + r * cols, cols);
  }
  if (partial_w != nullptr) block_column_sums(sum_w, cols, partial_w + static_cast<int64_t>(blockIdx.x) * cols);
  if (partial_b != nullptr) block_column_sums(sum_b, cols, partial_b + static_cast<int64_t>(blockIdx.x) * cols);
}

// ---------------------------------------------------------------- host side

// float4s per lane of the register-row version for these tensors, or 0 where
// it does not apply: float32 rows of at most 1024 elements, a multiple of 4,
// every row start 16-byte aligned.
int row_packs(const Tensor& x, std::initializer_list<const Tensor*> others) {
  const int64_t cols = x.shape()[1];
  if (x.dtype() != DType::F32 || cols % 4 != 0 || cols > 32 * 4 * kMaxRowPacks) return 0;
  if (!aligned_for(x.raw_data(), 16)) return 0;
  for (const Tensor* t : others) {
    if (t->defined() && !aligned_for(t->raw_data(), 16)) return 0;
  }
  return static_cast<int>((cols + 127) / 128);
}

// body(std::integral_constant<int, packs>{}) for packs in 1..kMaxRowPacks.
template <typename Body, int... P>
void with_row_packs(int packs, Body&& body, std::integer_sequence<int, P...>) {
  ((packs == P + 1 ? body(std::integral_constant<int, P + 1>{}) : void()), ...);
}
template <typename Body>
void with_row_packs(int packs, Body&& body) {
  with_row_packs(packs, body, std::make_integer_sequence<int, kMaxRowPacks>{});
}

template <typename Out>
void layer_norm_forward_rows(int packs, const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                             const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  const int64_t rows = x.shape()[0], cols = x.shape()[1];
  with_row_packs(packs, [&](auto p) {
    layer_norm_forward_rows_kernel<p(), Out><<<row_blocks(rows, kMaxBlocks), kRowWarps * 32, 0, current_stream()>>>(
        data_of<float>(x), data_or_null<const float>(weight), data_or_null<const float>(bias),
        static_cast<float>(eps), mutable_data_of<Out>(y), mutable_data_of<float>(mean), mutable_data_of<float>(rstd),
        rows, static_cast<int>(cols));
    CUDA_CHECK_LAUNCH();
  });
}

void layer_norm_forward_cuda(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& y,
                             const Tensor& mean, const Tensor& rstd) {
  DeviceGuard guard(y);
  const int64_t rows = x.shape()[0], cols = x.shape()[1];
  if (rows == 0) return;
  const bool bf16_out = y.dtype() == DType::BF16;
  if (const int packs = row_packs(x, {&weight, &bias, &y})) {
    if (bf16_out) return layer_norm_forward_rows<__nv_bfloat16>(packs, x, weight, bias, eps, y, mean, rstd);
    return layer_norm_forward_rows<float>(packs, x, weight, bias, eps, y, mean, rstd);
  }
  // The generic version writes x's dtype; a bfloat16 y is then its rounding.
  const Tensor out = bf16_out ? Tensor::empty(y.shape(), x.dtype(), y.device()) : y;
  dispatch_float(x.dtype(), "layer_norm", [&](auto tag) {
    using T = decltype(tag);
    launch_rows(rows, cols, layer_norm_forward_kernel_impl<T>, data_of<T>(x), data_or_null<const T>(weight),
                data_or_null<const T>(bias), static_cast<T>(eps), mutable_data_of<T>(out), mutable_data_of<T>(mean),
                mutable_data_of<T>(rstd), rows, cols);
  });
  if (bf16_out) copy_into(y, out);
}

// [chunks, cols] partial sums for a wanted gradient, else undefined.
Tensor partials_for(const Tensor& grad, int64_t chunks, int64_t cols, const Tensor& like) {
  return grad.defined() ? Tensor::empty({chunks, cols}, like.dtype(), like.device()) : Tensor();
}

// grad = the column sums of partials, when wanted.
template <typename T>
void sum_partials_into(const Tensor& partials, const Tensor& grad) {
  if (grad.defined()) sum_partial_rows(data_of<T>(partials), 1, partials.shape()[0], partials.shape()[1],
                                       mutable_data_of<T>(grad));
}

void layer_norm_backward_rows(int packs, const Tensor& x, const Tensor& weight, const Tensor& mean,
                              const Tensor& rstd, const Tensor& dy, const Tensor& dx_other, const Tensor& dx,
                              const Tensor& dweight, const Tensor& dbias) {
  const int64_t rows = x.shape()[0], cols = x.shape()[1];
  const unsigned blocks = row_blocks(rows, kMaxRowBlocks);
  const Tensor partial_w = partials_for(dweight, blocks, cols, x), partial_b = partials_for(dbias, blocks, cols, x);
  with_row_packs(packs, [&](auto p) {
    layer_norm_backward_rows_kernel<p()><<<blocks, kRowWarps * 32, 0, current_stream()>>>(
        data_of<float>(x), data_or_null<const float>(weight), data_of<float>(mean), data_of<float>(rstd),
        data_of<float>(dy), data_or_null<const float>(dx_other), mutable_data_of<float>(dx),
        data_or_null<float>(partial_w),
        data_or_null<float>(partial_b), rows, static_cast<int>(cols));
    CUDA_CHECK_LAUNCH();
  });
  sum_partials_into<float>(partial_w, dweight);
  sum_partials_into<float>(partial_b, dbias);
}

// Rows are split into at most this many chunks for the generic version's
// parameter gradients.
constexpr int64_t kMaxChunks = 128;

void layer_norm_backward_cuda(const Tensor& x, const Tensor& weight, const Tensor& mean, const Tensor& rstd,
                              const Tensor& dy, const Tensor& dx_other, const Tensor& dx, const Tensor& dweight,
                              const Tensor& dbias) {
  DeviceGuard guard(dx);
  const int64_t rows = x.shape()[0], cols = x.shape()[1];
  if (rows == 0) return;  // (dweight and dbias, if wanted, come zeroed)
  if (const int packs = row_packs(x, {&weight, &dy, &dx_other, &dx})) {
    return layer_norm_backward_rows(packs, x, weight, mean, rstd, dy, dx_other, dx, dweight, dbias);
  }
  dispatch_float(x.dtype(), "layer_norm_backward", [&](auto tag) {
    using T = decltype(tag);
    launch_rows(rows, cols, layer_norm_dx_kernel<T>, data_of<T>(x), data_or_null<const T>(weight), data_of<T>(mean),
                data_of<T>(rstd), data_of<T>(dy), data_or_null<const T>(dx_other), mutable_data_of<T>(dx), rows, cols);
    if (!dweight.defined() && !dbias.defined()) return;
    const int64_t rows_per_chunk = (rows + kMaxChunks - 1) / kMaxChunks;
    const int64_t chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
    const Tensor partial_w = partials_for(dweight, chunks, cols, x), partial_b = partials_for(dbias, chunks, cols, x);
    const dim3 grid(static_cast<unsigned>((cols + kThreads - 1) / kThreads), static_cast<unsigned>(chunks));
    layer_norm_param_partials_kernel<T><<<grid, kThreads, 0, current_stream()>>>(
        data_of<T>(x), data_of<T>(mean), data_of<T>(rstd), data_of<T>(dy), data_or_null<T>(partial_w),
        data_or_null<T>(partial_b), rows, cols, rows_per_chunk);
    CUDA_CHECK_LAUNCH();
    sum_partials_into<T>(partial_w, dweight);
    sum_partials_into<T>(partial_b, dbias);
  });
}

const bool registered = [] {
  layer_norm_forward_kernel.cuda = &layer_norm_forward_cuda;
  layer_norm_backward_kernel.cuda = &layer_norm_backward_cuda;
  return true;
}();

}  // namespace

}  // namespace engine

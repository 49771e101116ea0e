// CUDA kernels of the reduce family: one block per row of the [rows, length]
// matrix, each thread folding a strided slice of the row, then a block
// reduction. Sums over rows too few to fill the GPU (a loss's mean over every
// element is one row) cut each row into chunks, a block each, and add the
// chunks' partial sums in a second pass.
#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/reduce/reduce_kernels.h"

namespace engine {

namespace {

// Sums accumulate in double, for float32 too, as on the CPU: long float32 rows
// stay accurate (the summation order differs from the CPU's, the precision does
// not). Block b sums chunk b % chunks of row b / chunks into out[b]; the chunks
// are ceil(length / chunks) long (the last one shorter), so the partial sums
// are the same for a given shape, whatever the grid.
template <typename In, typename Out>
__global__ void sum_rows_kernel(const In* x, Out* out, int64_t rows, int64_t length, int64_t chunks) {
  const int64_t chunk = (length + chunks - 1) / chunks;
  for (int64_t b : block_stride(rows * chunks)) {
    const int64_t begin = (b % chunks) * chunk;
    const In* part = x + (b / chunks) * length + begin;
    double total = 0.0;
    for (int64_t i : thread_stride(std::min(chunk, length - begin))) total += part[i];
    total = block_sum(total);
    if (threadIdx.x == 0) out[b] = static_cast<Out>(total);
  }
}

// Chunks per row: enough blocks to keep every SM streaming (an H200 has 132),
// none shorter than kMinChunk elements, whose sum is worth a block.
constexpr int64_t kSumBlocks = 1024;
constexpr int64_t kMinChunk = 8192;
int64_t chunks_per_row(int64_t rows, int64_t length) {
  if (rows >= kSumBlocks / 4) return 1;
  return std::max<int64_t>(1, std::min((kSumBlocks + rows - 1) / rows, length / kMinChunk));
}

template <typename T>
void sum_rows(const Tensor& x, const Tensor& out, int64_t rows, int64_t length) {
  if (rows == 0) return;
  const int64_t chunks = chunks_per_row(rows, length);
  if (chunks == 1) {
    launch_rows(rows, length, sum_rows_kernel<T, T>, data_of<T>(x), mutable_data_of<T>(out), rows, length, int64_t{1});
    return;
  }
  const Tensor partial = Tensor::empty({rows * chunks}, DType::F64, x.device());
  launch_rows(rows * chunks, (length + chunks - 1) / chunks, sum_rows_kernel<T, double>, data_of<T>(x),
              mutable_data_of<double>(partial), rows, length, chunks);
  launch_rows(rows, chunks, sum_rows_kernel<double, T>, data_of<double>(partial), mutable_data_of<T>(out), rows,
              chunks, int64_t{1});
}

// A candidate maximum and where it is; identity: index past any real one.
template <typename T>
struct ArgMax {
  T value;
  int64_t index;
};

// The larger value, a NaN being larger than any number (max propagates NaN,
// as on the CPU); on a tie (NaNs tie) the lower index, so the first
// occurrence wins as on the CPU.
struct ArgMaxOp {
  template <typename T>
  __device__ ArgMax<T> operator()(const ArgMax<T>& a, const ArgMax<T>& b) const {
    const bool a_nan = isnan(a.value), b_nan = isnan(b.value);
    const bool tie = b.value == a.value || (a_nan && b_nan);
    if ((b.value > a.value || (b_nan && !a_nan)) || (tie && b.index < a.index)) return b;
    return a;
  }
};

template <typename T>
__global__ void max_rows_kernel(const T* x, T* out, int64_t* indices, int64_t rows, int64_t length) {
  const ArgMax<T> identity{T(-INFINITY), INT64_MAX};
  for (int64_t r : block_stride(rows)) {
    const T* row = x + r * length;
    ArgMax<T> best = identity;
    for (int64_t i : thread_stride(length)) best = ArgMaxOp{}(best, ArgMax<T>{row[i], i});
    best = block_all_reduce(best, ArgMaxOp{}, identity);
    if (threadIdx.x == 0) {
      out[r] = best.value;
      indices[r] = best.index;
    }
  }
}

void reduce_cuda(ReduceOp op, const Tensor& x, const Tensor& out, const Tensor& indices) {
  DeviceGuard guard(x);
  const int64_t rows = x.shape()[0], length = x.shape()[1];
  dispatch_float(x.dtype(), "reduce", [&](auto tag) {
    using T = decltype(tag);
    if (op == ReduceOp::Sum) {
      sum_rows<T>(x, out, rows, length);
    } else {
      launch_rows(rows, length, max_rows_kernel<T>, data_of<T>(x), mutable_data_of<T>(out),
                  mutable_data_of<int64_t>(indices), rows, length);
    }
  });
}

template <typename T>
__global__ void scatter_rows_kernel_impl(const int64_t* indices, const T* dy, T* dx, int64_t rows, int64_t length) {
  for (int64_t r : grid_stride(rows)) dx[r * length + indices[r]] = dy[r];
}

void scatter_rows_cuda(const Tensor& indices, const Tensor& dy, const Tensor& dx) {
  DeviceGuard guard(dx);
  const int64_t rows = dx.shape()[0], length = dx.shape()[1];
  dispatch_float(dy.dtype(), "scatter_rows", [&](auto tag) {
    using T = decltype(tag);
    launch_1d(rows, scatter_rows_kernel_impl<T>, data_of<int64_t>(indices), data_of<T>(dy), mutable_data_of<T>(dx),
              rows, length);
  });
}

const bool registered = [] {
  reduce_kernel.cuda = &reduce_cuda;
  scatter_rows_kernel.cuda = &scatter_rows_cuda;
  return true;
}();

}  // namespace

}  // namespace engine

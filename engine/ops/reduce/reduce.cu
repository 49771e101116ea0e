// CUDA kernels of the reduce family: one block per row of the [rows, length]
// matrix, each thread folding a strided slice of the row, then a block reduction.
#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/reduce/reduce_kernels.h"

namespace engine {

namespace {

// Sums accumulate in double, for float32 too, as on the CPU: long float32 rows
// stay accurate (the summation order differs from the CPU's, the precision does not).
template <typename T>
__global__ void sum_rows_kernel(const T* x, T* out, int64_t rows, int64_t length) {
  for (int64_t r : block_stride(rows)) {
    const T* row = x + r * length;
    double total = 0.0;
    for (int64_t i : thread_stride(length)) total += row[i];
    total = block_sum(total);
    if (threadIdx.x == 0) out[r] = static_cast<T>(total);
  }
}

// A candidate maximum and where it is; identity: index past any real one.
template <typename T>
struct ArgMax {
  T value;
  int64_t index;
};

// The larger value; on a tie the lower index, so the first occurrence wins as
// on the CPU (NaNs: unspecified).
struct ArgMaxOp {
  template <typename T>
  __device__ ArgMax<T> operator()(const ArgMax<T>& a, const ArgMax<T>& b) const {
    if (b.value > a.value || (b.value == a.value && b.index < a.index)) return b;
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
      launch_rows(rows, length, sum_rows_kernel<T>, data_of<T>(x), mutable_data_of<T>(out), rows, length);
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

// CPU reference kernels of the reduce family.
#include "engine/ops/reduce/reduce_kernels.h"

#include <cmath>

namespace engine {

namespace {

void reduce_cpu(ReduceOp op, const Tensor& x, const Tensor& out, const Tensor& indices) {
  dispatch_float(x.dtype(), "reduce", [&](auto tag) {
    using T = decltype(tag);
    const int64_t rows = x.shape()[0];
    const int64_t length = x.shape()[1];
    const T* px = static_cast<const T*>(x.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = px + r * length;
      if (op == ReduceOp::Sum) {
        double total = 0.0;  // double accumulation keeps long float32 sums accurate
        for (int64_t i = 0; i < length; ++i) total += row[i];
        po[r] = static_cast<T>(total);
      } else {
        // The first maximum; a NaN counts as larger than any number, so the
        // first NaN wins (max propagates NaN).
        int64_t best = 0;
        for (int64_t i = 1; i < length && !std::isnan(row[best]); ++i) {
          if (row[i] > row[best] || std::isnan(row[i])) best = i;
        }
        po[r] = row[best];
        static_cast<int64_t*>(indices.raw_data())[r] = best;
      }
    }
  });
}

void scatter_rows_cpu(const Tensor& indices, const Tensor& dy, const Tensor& dx) {
  dispatch_float(dy.dtype(), "scatter_rows", [&](auto tag) {
    using T = decltype(tag);
    const int64_t rows = dx.shape()[0];
    const int64_t length = dx.shape()[1];
    const int64_t* pi = static_cast<const int64_t*>(indices.raw_data());
    const T* pdy = static_cast<const T*>(dy.raw_data());
    T* pdx = static_cast<T*>(dx.raw_data());
    for (int64_t r = 0; r < rows; ++r) pdx[r * length + pi[r]] = pdy[r];
  });
}

}  // namespace

KernelSlot<ReduceKernel> reduce_kernel{"reduce", &reduce_cpu, nullptr};
KernelSlot<ScatterRowsKernel> scatter_rows_kernel{"scatter_rows", &scatter_rows_cpu, nullptr};

}  // namespace engine

// CUDA kernel of cumsum: one thread per (outer, inner) line, scanning its
// `length` elements in order (the CPU's additions, so the same results).
#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/cumsum/cumsum_kernels.h"

namespace engine {

namespace {

template <typename T>
__global__ void cumsum_kernel_impl(const T* x, T* out, int64_t outer, int64_t length, int64_t inner, bool reverse) {
  for (int64_t line : grid_stride(outer * inner)) {
    // Neighbouring threads take neighbouring inner positions: coalesced reads.
    const int64_t start = line / inner * length * inner + line % inner;
    T total = 0;
    for (int64_t step = 0; step < length; ++step) {
      const int64_t at = start + (reverse ? length - 1 - step : step) * inner;
      total += x[at];
      out[at] = total;
    }
  }
}

void cumsum_cuda(const Tensor& x, const Tensor& out, bool reverse) {
  DeviceGuard guard(out);
  const int64_t outer = x.shape()[0], length = x.shape()[1], inner = x.shape()[2];
  dispatch_float(x.dtype(), "cumsum", [&](auto tag) {
    using T = decltype(tag);
    launch_1d(outer * inner, cumsum_kernel_impl<T>, data_of<T>(x), mutable_data_of<T>(out), outer, length, inner,
              reverse);
  });
}

const bool registered = [] {
  cumsum_kernel.cuda = &cumsum_cuda;
  return true;
}();

}  // namespace

}  // namespace engine

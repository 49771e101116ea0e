// CPU reference kernel of cumsum.
#include <algorithm>

#include "engine/ops/cumsum/cumsum_kernels.h"

namespace engine {

namespace {

void cumsum_cpu(const Tensor& x, const Tensor& out, bool reverse) {
  dispatch_float(x.dtype(), "cumsum", [&](auto tag) {
    using T = decltype(tag);
    const int64_t outer = x.shape()[0], length = x.shape()[1], inner = x.shape()[2];
    const T* px = static_cast<const T*>(x.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    for (int64_t o = 0; o < outer; ++o) {
      const T* xo = px + o * length * inner;
      T* oo = po + o * length * inner;
      // Scan row by row (rows of `inner` contiguous elements), each row adding
      // the previous one: the inner loop stays contiguous.
      for (int64_t step = 0; step < length; ++step) {
        const int64_t i = reverse ? length - 1 - step : step;
        const T* src = xo + i * inner;
        T* dst = oo + i * inner;
        if (step == 0) {
          std::copy(src, src + inner, dst);
          continue;
        }
        const T* previous = reverse ? dst + inner : dst - inner;
        for (int64_t j = 0; j < inner; ++j) dst[j] = src[j] + previous[j];
      }
    }
  });
}

}  // namespace

KernelSlot<CumsumKernel> cumsum_kernel{"cumsum", &cumsum_cpu, nullptr};

}  // namespace engine

// CPU reference kernels of the depthwise convolution along a sequence (work
// split as engine/ops/scan/sequence_cpu.h says).
#include <algorithm>
#include <vector>

#include "engine/ops/conv/depthwise_conv1d_kernels.h"
#include "engine/ops/elementwise/elementwise_math.h"
#include "engine/ops/scan/sequence_cpu.h"

namespace engine {

namespace {

using namespace sequence;  // the sequence ops' shared helpers

void depthwise_conv1d_cpu(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& y,
                          int64_t pad_left, bool reverse, bool silu, const Tensor& pre) {
  dispatch_float(x.dtype(), "depthwise_conv1d", [&](auto tag) {
    using T = decltype(tag);
    const int64_t batch = x.shape()[0], length = x.shape()[1], channels = x.shape()[2], taps = weight.shape()[1];
    const SequenceOrder order{length, reverse};
    const T* px = data_or_null<const T>(x);
    const T* pw = data_or_null<const T>(weight);
    const T* pbias = data_or_null<const T>(bias);
    T* py = data_or_null<T>(y);
    T* ppre = data_or_null<T>(pre);
    for_each_channel_block(batch, channels, x.numel() * taps, [&](int64_t n, int64_t c0, int64_t c1) {
      const int64_t base = n * length * channels;
      for (int64_t k = 0; k < length; ++k) {
        const int64_t at = base + order.at(k) * channels;
        T* out = py + at;
        for (int64_t c = c0; c < c1; ++c) out[c] = pbias ? pbias[c] : T(0);
        for (int64_t j = 0; j < taps; ++j) {
          const int64_t src = k + j - pad_left;
          if (src < 0 || src >= length) continue;
          const T* in = px + base + order.at(src) * channels;
          for (int64_t c = c0; c < c1; ++c) out[c] += pw[c * taps + j] * in[c];
        }
        if (!silu) continue;
        if (ppre) std::copy(out + c0, out + c1, ppre + at + c0);
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) out[c] = elementwise_math::apply_unary(UnaryOp::Silu, out[c]);
      }
    });
  });
}

void depthwise_conv1d_backward_cpu(const Tensor& x, const Tensor& weight, const Tensor& dy, const Tensor& dx,
                                   const Tensor& dweight, const Tensor& dbias, int64_t pad_left, bool reverse) {
  dispatch_float(x.dtype(), "depthwise_conv1d_backward", [&](auto tag) {
    using T = decltype(tag);
    const int64_t batch = x.shape()[0], length = x.shape()[1], channels = x.shape()[2], taps = weight.shape()[1];
    const SequenceOrder order{length, reverse};
    const T* px = data_or_null<const T>(x);
    const T* pw = data_or_null<const T>(weight);
    const T* pdy = data_or_null<const T>(dy);
    T* pdx = data_or_null<T>(dx);
    // Per-batch partial sums of dweight [C, K] and dbias [C].
    std::vector<T> dw_part(batch * channels * taps, T(0)), db_part(batch * channels, T(0));
    std::fill(pdx, pdx + x.numel(), T(0));
    for_each_channel_block(batch, channels, x.numel() * taps, [&](int64_t n, int64_t c0, int64_t c1) {
      const int64_t base = n * length * channels;
      T* dw = &dw_part[n * channels * taps];
      T* db = &db_part[n * channels];
      for (int64_t k = 0; k < length; ++k) {
        const T* g = pdy + base + order.at(k) * channels;
        for (int64_t c = c0; c < c1; ++c) db[c] += g[c];
        for (int64_t j = 0; j < taps; ++j) {
          const int64_t src = k + j - pad_left;
          if (src < 0 || src >= length) continue;
          const int64_t at = base + order.at(src) * channels;
          for (int64_t c = c0; c < c1; ++c) {
            pdx[at + c] += pw[c * taps + j] * g[c];
            dw[c * taps + j] += g[c] * px[at + c];
          }
        }
      }
    });
    sum_rows(dw_part.data(), batch, channels * taps, data_or_null<T>(dweight));
    if (dbias.defined()) sum_rows(db_part.data(), batch, channels, data_or_null<T>(dbias));
  });
}

}  // namespace

KernelSlot<DepthwiseConv1dKernel> depthwise_conv1d_kernel{"depthwise_conv1d", &depthwise_conv1d_cpu, nullptr};
KernelSlot<DepthwiseConv1dBackwardKernel> depthwise_conv1d_backward_kernel{
    "depthwise_conv1d_backward", &depthwise_conv1d_backward_cpu, nullptr};

}  // namespace engine

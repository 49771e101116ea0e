// CUDA kernels of the depthwise convolution along a sequence: the contracts
// are in depthwise_conv1d_kernels.h and the reference semantics in
// depthwise_conv1d_cpu.cpp, whose sums these kernels compute (dx gathered per
// output rather than scattered, dweight and dbias reduced by block and then
// by batch). Tensors arrive contiguous, [batch, length, channels]; element
// (n, t, c) is at (n * length + t) * channels + c.
//
// The forward: one thread per (V channels, tile of kTile outputs). The
// backward is one fused pass per block of up to 16 taps: a thread walks a
// quarter of a sequence with a sliding window of dy, writing (or adding to) dx
// and summing dweight and dbias, which are then reduced over the block and the
// batch in a fixed order.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/conv/depthwise_conv1d_kernels.h"
#include "engine/ops/elementwise/elementwise_math.h"
#include "engine/ops/scan/sequence_cuda.cuh"

namespace engine {

namespace {

using namespace sequence;  // the sequence ops' shared helpers

// SequenceOrder::at for device code.
__device__ __forceinline__ int64_t time_at(int64_t step, int64_t length, bool reverse) {
  return reverse ? length - 1 - step : step;
}

// The convolution along the sequence, vectorised over V channels, one thread
// per (batch n, tile of kTile output steps, channel group):
//   y_k = bias + sum_j w[c, j] x_{k + j - pad_left}.
// Taps go in blocks of kTapBlock: the block's weights and the
// kTile + kTapBlock - 1 inputs that the tile's outputs read are loaded into
// registers once (each input is read once per tap block, not once per tap).
constexpr int kTapBlock = 4;  // Mamba's convolution: one block

constexpr int kConvThreads = 256;

// silu: y = silu(convolution), and pre (if not null) = the convolution.
template <typename T, int V>
__global__ void __launch_bounds__(kConvThreads, 2)
    conv_forward_kernel(const T* x, const T* w, const T* bias, T* y, int64_t batch, int64_t length, int64_t channels,
                        int64_t taps, int64_t pad_left, bool reverse, bool silu, T* pre) {
  constexpr int kWindow = kTile + kTapBlock - 1;
  const int64_t groups = channels / V, tiles = (length + kTile - 1) / kTile;
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= batch * tiles * groups) return;
  const int64_t c = idx % groups * V, k0 = idx / groups % tiles * kTile, n = idx / (groups * tiles);
  const int64_t base = n * length * channels + c;
  Pack<T, V> out[kTile];
  const Pack<T, V> bias_pack = bias ? load_pack<T, V>(bias + c) : zero_pack<T, V>();
#pragma unroll
  for (int u = 0; u < kTile; ++u) out[u] = bias_pack;
  for (int64_t j0 = 0; j0 < taps; j0 += kTapBlock) {
    Pack<T, V> window[kWindow];  // window[i] = input step k0 + j0 - pad_left + i (zero outside)
#pragma unroll
    for (int i = 0; i < kWindow; ++i) {
      const int64_t src = k0 + j0 - pad_left + i;
      const bool inside = src >= 0 && src < length && i < kTile + taps - j0 - 1;
      window[i] = inside ? load_pack<T, V>(x + base + time_at(src, length, reverse) * channels) : zero_pack<T, V>();
    }
    T weight[kTapBlock][V];
#pragma unroll
    for (int j = 0; j < kTapBlock; ++j) {
#pragma unroll
      for (int i = 0; i < V; ++i) weight[j][i] = j0 + j < taps ? w[(c + i) * taps + j0 + j] : T(0);
    }
#pragma unroll
    for (int u = 0; u < kTile; ++u) {
#pragma unroll
      for (int j = 0; j < kTapBlock; ++j) {
        if (j0 + j >= taps) break;
#pragma unroll
        for (int i = 0; i < V; ++i) out[u].v[i] += weight[j][i] * window[u + j].v[i];
      }
    }
  }
#pragma unroll
  for (int u = 0; u < kTile; ++u) {
    if (k0 + u >= length) continue;
    const int64_t at = base + time_at(k0 + u, length, reverse) * channels;
    if (silu) {
      if (pre) store_pack(pre + at, out[u]);
#pragma unroll
      for (int i = 0; i < V; ++i) out[u].v[i] = elementwise_math::apply_unary(UnaryOp::Silu, out[u].v[i]);
    }
    store_pack(y + at, out[u]);
  }
}

// The backward: one pass over x and dy per block of up to 16 taps writes dx
// and per-block partial sums of dweight and dbias. The kernel holds a window
// of K taps (K = 4, Mamba's convolution, 8, 12 or 16, the conv mixer's wider
// kernels; the host takes the smallest that holds the block's taps). A
// convolution of more than 16 taps runs in blocks from its last taps down:
// the pass of taps tap0.. is the same convolution with pad_left - tap0 (which
// may be negative), and each pass after the first adds its dx terms to what
// the earlier ones wrote (kAddToDx), so that dx keeps the CPU's order of
// terms. Only the pass of tap 0 sums dbias. A thread takes V
// neighbouring channels of batch n over one chunk of the sequence
// (kConvBwdChunks chunks, each a multiple of kTile steps), walking it in tiles
// of kTile scan steps m whose loads (dy_{m + pad} and x_m) are issued
// together. A sliding window of the last K values of dy,
// win[i] = dy_{m + pad - (K - 1) + i}, gives at step m
//   dx_m      = sum_j w[c, j] dy_{m - j + pad} = sum_j w[c, j] win[K - 1 - j]
//               (j from the last tap down: the CPU's order of terms)
//   dw_j     += x_m dy_{m - j + pad}
// and each dy_k enters the window once, at step m = k - pad, which is when
// dbias adds it (the first chunk adds the k < pad before its first step).
// Taps past the block's have zero weights (their dx terms are exact zeros)
// and their dw is not written. Steps past the sequence load zeros (x_m = 0 and dy_k = 0 for
// k >= L, k < 0), so they add nothing and only the dx stores are predicated.
// The block's four chunks of the same channels are summed in shared memory in
// chunk order; the per-batch rows are summed by conv_column_sum_kernel: a
// fixed order throughout, no atomics.
constexpr int kConvTapBlock = 16;  // the widest window
constexpr int kConvBwdChunks = 4;
constexpr int kConvBwdThreads = 256;
constexpr int kConvBwdGroups = kConvBwdThreads / kConvBwdChunks;  // channel groups per block

// Blocks per SM that the registers allow without spilling (ptxas -v, sm_90a).
// The 4-tap window takes at most 80 registers: 3 blocks (the 85-register
// bound). Wider windows run single channels: pairs of float channels in the
// 8-tap window would take 108 registers (and spill at 3 blocks), while 4
// blocks of single channels keep as many bytes in flight as 2 blocks of pairs,
// in twice the warps. Float: 64 registers for 8 taps (4 blocks), 76 for 12
// and 80 for 16 (3 blocks); a 16-tap pass that adds to dx holds dx's tile too
// and would spill at 3 blocks (2). Double: 108, 128 and 168 (2, 2 and 1
// blocks). shared_sums takes at most 25.5 KiB (16 taps, double).
template <typename T, int V, int K, bool kAddToDx>
constexpr int conv_bwd_blocks_per_sm() {
  constexpr bool single_floats = V * sizeof(T) == sizeof(float);
  if (K <= 4) return 3;
  if (K <= 8) return single_floats ? 4 : 2;
  if (K <= 12) return single_floats ? 3 : 2;
  if (!single_floats) return 1;
  return kAddToDx ? 2 : 3;
}

// The taps this pass takes: tap0 .. tap0 + count - 1 of `total` (the row
// length of the weights and of the partial sums' dweight columns).
struct TapBlock {
  int tap0, count, total;
};

template <typename T, int V, int K, bool kAddToDx>
__global__ void __launch_bounds__(kConvBwdThreads, conv_bwd_blocks_per_sm<T, V, K, kAddToDx>())
    conv_backward_fused_kernel(const T* x, const T* w, const T* dy, T* dx, T* part, int length, int channels,
                               TapBlock taps, int pad_left, bool reverse, int chunk_steps, bool with_bias) {
  __shared__ T shared_sums[kConvBwdChunks - 1][K + 1][V][kConvBwdGroups];
  const int groups = channels / V;
  const int local = threadIdx.x % kConvBwdGroups, chunk = threadIdx.x / kConvBwdGroups;
  const int group = blockIdx.x * kConvBwdGroups + local;
  const bool valid = group < groups;
  const int c = (valid ? group : 0) * V;
  const int64_t n = blockIdx.y;
  const int64_t batch_offset = n * length * channels;
  const T* xb = x + batch_offset;
  const T* gb = dy + batch_offset;
  T* dxb = dx + batch_offset;
  const int stride = reverse ? -channels : channels;
  const int first = (reverse ? (length - 1) * channels : 0) + c;  // scan step 0 of channel c
  auto at = [&](int step) { return first + step * stride; };

  T weight[K][V];
#pragma unroll
  for (int j = 0; j < K; ++j) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
      weight[j][i] = valid && j < taps.count ? w[(c + i) * taps.total + taps.tap0 + j] : T(0);
    }
  }
  T dw[K][V], db[V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    db[i] = T(0);
#pragma unroll
    for (int j = 0; j < K; ++j) dw[j][i] = T(0);
  }
  const int m_begin = chunk * chunk_steps;
  const int m_end = !valid ? 0 : m_begin + chunk_steps < length ? m_begin + chunk_steps : length;
  // win[i] = dy_{m + pad - (K - 1) + i} for the next step m (zero outside the sequence).
  Pack<T, V> win[K];
#pragma unroll
  for (int i = 0; i + 1 < K; ++i) {
    const int k = m_begin + pad_left - (K - 1) + i;
    win[i + 1] = m_begin < m_end && k >= 0 && k < length ? load_pack<T, V>(gb + at(k)) : zero_pack<T, V>();
  }
  // dbias (summed by the pass of tap 0, whose pad is not negative): the first
  // chunk adds dy_0 .. dy_{pad - 1}, which no step brings in.
  if (chunk == 0 && valid && with_bias && taps.tap0 == 0) {
    for (int k = 0; k < pad_left && k < length; ++k) {
      const Pack<T, V> g = load_pack<T, V>(gb + at(k));
#pragma unroll
      for (int v = 0; v < V; ++v) db[v] += g.v[v];
    }
  }
  for (int m0 = m_begin; m0 < m_end; m0 += kTile) {
    Pack<T, V> g[kTile], xv[kTile], earlier[kTile];  // earlier: dx so far (kAddToDx)
    const int k0 = m0 + pad_left;
    if (k0 >= 0 && k0 + kTile <= length && m0 + kTile <= length) {  // the whole tile inside: no predicates
#pragma unroll
      for (int u = 0; u < kTile; ++u) {
        g[u] = load_pack<T, V>(gb + at(k0 + u));
        xv[u] = load_pack<T, V>(xb + at(m0 + u));
        if constexpr (kAddToDx) earlier[u] = load_pack<T, V>(dxb + at(m0 + u));
      }
    } else {
#pragma unroll
      for (int u = 0; u < kTile; ++u) {
        g[u] = k0 + u >= 0 && k0 + u < length ? load_pack<T, V>(gb + at(k0 + u)) : zero_pack<T, V>();
        xv[u] = m0 + u < length ? load_pack<T, V>(xb + at(m0 + u)) : zero_pack<T, V>();
        if constexpr (kAddToDx) earlier[u] = m0 + u < length ? load_pack<T, V>(dxb + at(m0 + u)) : zero_pack<T, V>();
      }
    }
#pragma unroll
    for (int u = 0; u < kTile; ++u) {
#pragma unroll
      for (int i = 0; i + 1 < K; ++i) win[i] = win[i + 1];
      win[K - 1] = g[u];
      Pack<T, V> grad;
#pragma unroll
      for (int v = 0; v < V; ++v) {
        T sum = kAddToDx ? earlier[u].v[v] : T(0);
#pragma unroll
        for (int j = K - 1; j >= 0; --j) sum += weight[j][v] * win[K - 1 - j].v[v];
        grad.v[v] = sum;
#pragma unroll
        for (int j = 0; j < K; ++j) dw[j][v] += xv[u].v[v] * win[K - 1 - j].v[v];
        db[v] += g[u].v[v];
      }
      if (m0 + u < m_end) store_pack(dxb + at(m0 + u), grad);
    }
  }
  // Sum the block's chunks in chunk order; chunk 0's threads write the batch row.
  if (chunk > 0) {
#pragma unroll
    for (int v = 0; v < V; ++v) {
#pragma unroll
      for (int j = 0; j < K; ++j) shared_sums[chunk - 1][j][v][local] = dw[j][v];
      shared_sums[chunk - 1][K][v][local] = db[v];
    }
  }
  __syncthreads();
  if (chunk > 0 || !valid) return;
  const int64_t weight_columns = static_cast<int64_t>(channels) * taps.total;
  T* row = part + n * (weight_columns + (with_bias ? channels : 0));
#pragma unroll
  for (int v = 0; v < V; ++v) {
#pragma unroll
    for (int j = 0; j < K; ++j) {
      T total = dw[j][v];
#pragma unroll
      for (int r = 0; r + 1 < kConvBwdChunks; ++r) total += shared_sums[r][j][v][local];
      if (j < taps.count) row[(c + v) * taps.total + taps.tap0 + j] = total;
    }
    if (with_bias && taps.tap0 == 0) {
      T total = db[v];
#pragma unroll
      for (int r = 0; r + 1 < kConvBwdChunks; ++r) total += shared_sums[r][K][v][local];
      row[weight_columns + c + v] = total;
    }
  }
}

// out[col] = sum over the rows of part[row, col] (rows summed in a fixed
// order), written to first[col] for col < split and to second[col - split]
// after. A block takes 32 columns: its 8 warps sum every 8th row each (in
// increasing order), then warp 0 adds the 8 partial sums in warp order.
constexpr int kColumnSumSlices = 8;

template <typename T>
__global__ void __launch_bounds__(kWarpSize * kColumnSumSlices) conv_column_sum_kernel(
    const T* part, int64_t rows, int64_t columns, int64_t split, T* first, T* second) {
  __shared__ T partial[kColumnSumSlices][kWarpSize];
  const int lane = threadIdx.x % kWarpSize, slice = threadIdx.x / kWarpSize;
  const int64_t col = blockIdx.x * static_cast<int64_t>(kWarpSize) + lane;
  T acc = T(0);
  if (col < columns) {
    for (int64_t r = slice; r < rows; r += kColumnSumSlices) acc += part[r * columns + col];
  }
  partial[slice][lane] = acc;
  __syncthreads();
  if (slice != 0 || col >= columns) return;
  T total = partial[0][lane];
#pragma unroll
  for (int s = 1; s < kColumnSumSlices; ++s) total += partial[s][lane];
  if (col < split) {
    first[col] = total;
  } else {
    second[col - split] = total;
  }
}

void depthwise_conv1d_cuda(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& y,
                           int64_t pad_left, bool reverse, bool silu, const Tensor& pre) {
  DeviceGuard guard(x);
  dispatch_float(x.dtype(), "depthwise_conv1d", [&](auto tag) {
    using T = decltype(tag);
    const int64_t batch = x.shape()[0], length = x.shape()[1], channels = x.shape()[2];
    with_pack_width<T>(pack_width<T>(channels, {&x, &y, &bias, &pre}), [&](auto V) {
      const int64_t threads = batch * ((length + kTile - 1) / kTile) * (channels / V);
      conv_forward_kernel<T, decltype(V)::value>
          <<<blocks_for(threads, kConvThreads), kConvThreads, 0, current_stream()>>>(
              data_or_null<const T>(x), data_or_null<const T>(weight), data_or_null<const T>(bias),
              data_or_null<T>(y), batch, length, channels, weight.shape()[1], pad_left, reverse, silu,
              data_or_null<T>(pre));
      CUDA_CHECK_LAUNCH();
    });
  });
}

template <int K>
using TapWindow = std::integral_constant<int, K>;

// Writes dx and the per-batch rows of dweight (and dbias) partial sums into
// part: one pass of the fused kernel per block of taps, the last block
// (kConvTapBlock taps or fewer) first, each in the smallest window that holds it.
template <typename T>
void conv_backward_fused(const Tensor& x, const Tensor& weight, const Tensor& dy, const Tensor& dx, const Tensor& part,
                         int64_t pad_left, bool reverse, bool with_bias) {
  const int64_t batch = x.shape()[0], length = x.shape()[1], channels = x.shape()[2], taps = weight.shape()[1];
  check(batch <= 65535, "depthwise_conv1d (cuda): batch {} is above the grid's limit of 65535", batch);
  check(length * channels <= INT32_MAX - kTile * channels,
        "depthwise_conv1d (cuda): {} steps of {} channels are above the backward's 32-bit offsets", length, channels);
  const int chunk_steps = static_cast<int>((length + kConvBwdChunks * kTile - 1) / (kConvBwdChunks * kTile) * kTile);
  auto launch = [&](auto V, auto K, auto add_to_dx, TapBlock block) {
    constexpr int kV = decltype(V)::value;
    const dim3 grid(blocks_for(channels / kV, kConvBwdGroups), static_cast<unsigned>(batch));
    conv_backward_fused_kernel<T, kV, decltype(K)::value, decltype(add_to_dx)::value>
        <<<grid, kConvBwdThreads, 0, current_stream()>>>(
            data_or_null<const T>(x), data_or_null<const T>(weight), data_or_null<const T>(dy), data_or_null<T>(dx),
            data_or_null<T>(part), static_cast<int>(length), static_cast<int>(channels), block,
            static_cast<int>(pad_left - block.tap0), reverse, chunk_steps, with_bias);
    CUDA_CHECK_LAUNCH();
  };
  using One = std::integral_constant<int, 1>;
  using Pair = std::integral_constant<int, 2>;
  const int total = static_cast<int>(taps), last_tap0 = (total - 1) / kConvTapBlock * kConvTapBlock;
  // The last block writes dx, in the smallest window that holds it; the wider
  // windows take single channels (see conv_bwd_blocks_per_sm).
  using WriteDx = std::false_type;
  using AddToDx = std::true_type;
  const auto write_last_block = [&] {
    const WriteDx write;
    const TapBlock last{last_tap0, total - last_tap0, total};
    static_assert(kConvTapBlock == 16, "the widest window");
    if (last.count > 12) return launch(One{}, TapWindow<16>{}, write, last);
    if (last.count > 8) return launch(One{}, TapWindow<12>{}, write, last);
    if (last.count > 4) return launch(One{}, TapWindow<8>{}, write, last);
    // Mamba's convolution: pairs of channels (8-byte accesses) when they fit (4 would take too many registers).
    if constexpr (std::is_same_v<T, float>) {
      if (pack_width<T>(channels, {&x, &dy, &dx}) >= 2) return launch(Pair{}, TapWindow<4>{}, write, last);
    }
    launch(One{}, TapWindow<4>{}, write, last);
  };
  write_last_block();
  // Then the full blocks before it, down to tap 0, each adding to dx.
  for (int tap0 = last_tap0 - kConvTapBlock; tap0 >= 0; tap0 -= kConvTapBlock) {
    launch(One{}, TapWindow<kConvTapBlock>{}, AddToDx{}, TapBlock{tap0, kConvTapBlock, total});
  }
}

// One fused pass per block of taps (dx and per-batch partials), then one column sum.
void depthwise_conv1d_backward_cuda(const Tensor& x, const Tensor& weight, const Tensor& dy, const Tensor& dx,
                                    const Tensor& dweight, const Tensor& dbias, int64_t pad_left, bool reverse) {
  DeviceGuard guard(x);
  dispatch_float(x.dtype(), "depthwise_conv1d_backward", [&](auto tag) {
    using T = decltype(tag);
    const int64_t batch = x.shape()[0], channels = x.shape()[2], taps = weight.shape()[1];
    const bool with_bias = dbias.defined();
    const int64_t columns = channels * taps + (with_bias ? channels : 0);
    Tensor part = scratch(batch * columns, x);
    conv_backward_fused<T>(x, weight, dy, dx, part, pad_left, reverse, with_bias);
    conv_column_sum_kernel<T><<<blocks_for(columns, kWarpSize), kWarpSize * kColumnSumSlices, 0, current_stream()>>>(
        data_or_null<const T>(part), batch, columns, channels * taps, data_or_null<T>(dweight),
        data_or_null<T>(dbias));
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

// Fills the CUDA side of the slots defined in depthwise_conv1d_cpu.cpp (constant-initialised,
// so they exist before this runs).
static const bool registered = [] {
  depthwise_conv1d_kernel.cuda = &depthwise_conv1d_cuda;
  depthwise_conv1d_backward_kernel.cuda = &depthwise_conv1d_backward_cuda;
  return true;
}();

}  // namespace engine

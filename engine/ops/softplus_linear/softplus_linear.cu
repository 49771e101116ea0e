// CUDA kernels of softplus_linear.
//
// The forward is bound by writing y [M, N]: x's rows are only K <= 64
// elements and the weights a few KB. A thread owns V consecutive output
// channels and keeps their weights (V x KB, zero past K) and biases in
// registers; KB is K rounded up to one of a few compiled widths, so that the
// dot products are straight-line code. A block is `groups` channel groups
// (consecutive threads take consecutive groups, so a warp's stores are
// consecutive vectors of one row) times `slots` row slots, for one tile of
// channels (blockIdx.y) and one chunk of rows (blockIdx.x). It stages its
// tile of weights ([input][channel], read from global memory as the
// contiguous rows they are) and its chunk's x rows (zero-padded to KB) in
// shared memory, one barrier for both; each thread then takes its weights
// (one conflict-free vector per input) and every slots-th row of the chunk,
// reads the row's inputs as broadcast 16-byte shared loads and writes its V
// outputs as one store (16 bytes when V = 16 / sizeof(T) divides N, narrower
// otherwise). Chunks are sized for a few blocks per SM, which keeps the
// blocks' staging latencies overlapped with other blocks' work.
#include <algorithm>
#include <type_traits>
#include <utility>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/elementwise/elementwise_math.h"
#include "engine/ops/softplus_linear/softplus_linear.h"
#include "engine/ops/softplus_linear/softplus_linear_kernels.h"

namespace engine {

namespace {

constexpr int kStageBytes = 16384;  // shared memory for the weights, and as much for the x rows
constexpr int kBlocksPerSm = 4;     // the grid's aim
constexpr int kMinRowsPerThread = 4, kMaxRowsPerThread = 32;

template <typename T>
constexpr int kStageElements = kStageBytes / static_cast<int>(sizeof(T));

// The compiled input widths KB (K rounds up to the next one): Mamba's
// dt_rank = ceil(dim / 16) is 12 at dim 192, 24 at 384 and 48 at 768.
using InputWidths = std::integer_sequence<int, 8, 12, 16, 24, 32, 48, 64>;
static_assert(kSoftplusLinearMaxInputs == 64, "InputWidths must end at kSoftplusLinearMaxInputs");

// Channels per thread: as many as one 16-byte store holds, fewer when their
// weights would take more than 64 registers.
template <typename T, int KB>
constexpr int max_channels() {
  int v = 16 / static_cast<int>(sizeof(T));
  while (v > 1 && v * KB * static_cast<int>(sizeof(T)) > 64 * 4) v /= 2;
  return v;
}

// The launch's shape: see the file comment.
struct Tiling {
  int groups, slots, rows_per_thread;
  int64_t tiles, chunks;
};

template <typename T, int KB, int V>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ x, int64_t x_stride, const T* __restrict__ weight,
                   const T* __restrict__ bias, T* __restrict__ y, int64_t rows, int64_t n, int k, int groups,
                   int chunk_rows) {
  constexpr int kLoad = 16 / static_cast<int>(sizeof(T));  // inputs per shared load
  static_assert(KB % kLoad == 0, "an input width must be whole shared loads");
  __shared__ alignas(16) T w_stage[kStageElements<T>];  // [KB][channels]
  __shared__ alignas(16) T x_stage[kStageElements<T>];  // [chunk_rows][KB]
  const int channels = groups * V, group = threadIdx.x % groups, slot = threadIdx.x / groups;
  const int slots = blockDim.x / groups;
  const int64_t tile_first = static_cast<int64_t>(blockIdx.y) * channels;
  const int64_t first = tile_first + group * V;  // the thread's first channel
  for (int e = threadIdx.x; e < channels * KB; e += blockDim.x) {
    const int channel = e / KB, c = e % KB;
    const int64_t row = tile_first + channel;
    w_stage[c * channels + channel] = row < n && c < k ? weight[row * k + c] : T(0);
  }
  T w[KB][V], b[V];
  bool weights_loaded = false;
  for (int64_t chunk = blockIdx.x; chunk * chunk_rows < rows; chunk += gridDim.x) {
    const int64_t first_row = chunk * chunk_rows;
    for (int e = threadIdx.x; e < chunk_rows * KB; e += blockDim.x) {
      const int j = e / KB, c = e % KB;
      x_stage[e] = c < k && first_row + j < rows ? x[(first_row + j) * x_stride + c] : T(0);
    }
    __syncthreads();
    if (!weights_loaded) {
#pragma unroll
      for (int c = 0; c < KB; ++c) {
        const Pack<T, V> column = load_pack<T, V>(w_stage + c * channels + group * V);
#pragma unroll
        for (int v = 0; v < V; ++v) w[c][v] = column.v[v];
      }
#pragma unroll
      for (int v = 0; v < V; ++v) b[v] = first < n && bias ? bias[first + v] : T(0);
      weights_loaded = true;
    }
    // The last tile's spare threads (past N) only stage.
    for (int j = slot; first < n && j < chunk_rows && first_row + j < rows; j += slots) {
      Pack<T, V> out;
#pragma unroll
      for (int v = 0; v < V; ++v) out.v[v] = b[v];
      // The bias, then k = 0, 1, ... in order, as the CPU kernel sums (the
      // zero padding past K adds exact zeros).
#pragma unroll
      for (int c = 0; c < KB; c += kLoad) {
        const Pack<T, kLoad> in = load_pack<T, kLoad>(x_stage + j * KB + c);
#pragma unroll
        for (int i = 0; i < kLoad; ++i) {
#pragma unroll
          for (int v = 0; v < V; ++v) out.v[v] += in.v[i] * w[c + i][v];
        }
      }
#pragma unroll
      for (int v = 0; v < V; ++v) out.v[v] = elementwise_math::apply_unary(UnaryOp::Softplus, out.v[v]);
      store_pack(y + (first_row + j) * n + first, out);
    }
    __syncthreads();  // every thread is done with the chunk's rows
  }
}

// Tiles of at most a block's threads and a stage of weights; row slots to
// fill the block (within the x stage); rows per thread to make about
// kBlocksPerSm blocks per SM.
template <typename T, int KB, int V>
Tiling tiling(int64_t rows, int64_t n, int sms) {
  Tiling t;
  const int64_t total_groups = n / V;
  const int64_t max_groups = std::min(kThreads, kStageElements<T> / (V * KB));
  t.tiles = (total_groups + max_groups - 1) / max_groups;
  check(t.tiles <= kMaxBlocks, "softplus_linear: {} outputs per row are too many for one launch", n);
  t.groups = static_cast<int>((total_groups + t.tiles - 1) / t.tiles);
  const int max_rows = kStageElements<T> / KB;  // the x stage's
  t.slots = std::clamp(kThreads / t.groups, 1, max_rows / kMinRowsPerThread);
  const int64_t chunks_aim = std::max<int64_t>(1, int64_t{kBlocksPerSm} * sms / t.tiles);
  const int64_t per_thread = (rows + chunks_aim * t.slots - 1) / (chunks_aim * t.slots);
  t.rows_per_thread = static_cast<int>(std::clamp<int64_t>(
      per_thread, kMinRowsPerThread, std::min(kMaxRowsPerThread, max_rows / t.slots)));
  const int64_t chunk_rows = int64_t{t.slots} * t.rows_per_thread;
  t.chunks = (rows + chunk_rows - 1) / chunk_rows;
  return t;
}

template <typename T, int KB, int V>
void launch_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& y) {
  const int64_t rows = y.size(0), n = y.size(1);
  int sms = 0;
  cuda_check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, y.device().index), "SM count");
  const Tiling t = tiling<T, KB, V>(rows, n, sms);
  const dim3 grid(static_cast<unsigned>(std::min(t.chunks, kMaxBlocks)), static_cast<unsigned>(t.tiles));
  forward_kernel<T, KB, V><<<grid, t.groups * t.slots, 0, current_stream()>>>(
      data_of<T>(x), x.strides()[0], data_of<T>(weight), data_or_null<const T>(bias), mutable_data_of<T>(y), rows,
      n, static_cast<int>(weight.size(1)), t.groups, t.slots * t.rows_per_thread);
  CUDA_CHECK_LAUNCH();
}

// With the widest V (a power of two) that divides N, so that every row's
// first output is aligned for the thread's vector store.
template <typename T, int KB, int V>
void launch_widest(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& y) {
  if constexpr (V > 1) {
    if (y.size(1) % V != 0) return launch_widest<T, KB, V / 2>(x, weight, bias, y);
  }
  launch_forward<T, KB, V>(x, weight, bias, y);
}

// body(std::integral_constant<int, KB>{}) for the narrowest KB >= k.
template <typename Body, int... Widths>
void with_input_width(int64_t k, std::integer_sequence<int, Widths...>, Body&& body) {
  const bool found = ((k <= Widths && (body(std::integral_constant<int, Widths>{}), true)) || ...);
  check(found, "softplus_linear: K = {} is over the kernels' {}", k, kSoftplusLinearMaxInputs);
}

void softplus_linear_cuda(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& y) {
  DeviceGuard guard(y);
  dispatch_float(y.dtype(), "softplus_linear", [&](auto tag) {
    using T = decltype(tag);
    with_input_width(weight.size(1), InputWidths{}, [&](auto width) {
      constexpr int KB = decltype(width)::value;
      launch_widest<T, KB, max_channels<T, KB>()>(x, weight, bias, y);
    });
  });
}

// d_pre = dy * softplus'(pre) from y: vectors of V, then the count % V tail
// element by element (by the first threads of the grid).
template <typename T, int V>
__global__ void grad_kernel(const T* y, const T* dy, T* d_pre, int64_t count) {
  const int64_t vectors = count / V;
  for (int64_t i : grid_stride(vectors)) {
    const Pack<T, V> out = load_pack<T, V>(y + i * V), g = load_pack<T, V>(dy + i * V);
    Pack<T, V> r;
#pragma unroll
    for (int j = 0; j < V; ++j) r.v[j] = g.v[j] * softplus_math::derivative_from_output(out.v[j]);
    store_pack(d_pre + i * V, r);
  }
  const int64_t tail = vectors * V + static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (tail < count) d_pre[tail] = dy[tail] * softplus_math::derivative_from_output(y[tail]);
}

void softplus_grad_cuda(const Tensor& y, const Tensor& dy, const Tensor& d_pre) {
  DeviceGuard guard(y);
  dispatch_float(y.dtype(), "softplus_grad", [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = 16 / static_cast<int>(sizeof(T));
    const int64_t count = y.numel();
    const bool aligned = aligned_for(y.raw_data(), 16) && aligned_for(dy.raw_data(), 16) &&
                         aligned_for(d_pre.raw_data(), 16);
    const T* py = data_of<T>(y);
    const T* pg = data_of<T>(dy);
    T* pd = mutable_data_of<T>(d_pre);
    if (aligned) {
      launch_1d(std::max(count / V, count % V), grad_kernel<T, V>, py, pg, pd, count);
    } else {
      launch_1d(count, grad_kernel<T, 1>, py, pg, pd, count);
    }
  });
}

}  // namespace

// Fills the CUDA side of the slots defined in softplus_linear_cpu.cpp.
static const bool registered = [] {
  softplus_linear_kernel.cuda = &softplus_linear_cuda;
  softplus_grad_kernel.cuda = &softplus_grad_cuda;
  return true;
}();

}  // namespace engine

// Shared helpers of the CUDA kernels: error checks, the current device and
// stream, launch arithmetic, grid-stride loops, block reductions and strided
// layouts, so that each kernel file holds only its maths.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

#include "engine/dispatch.h"
#include "engine/tensor.h"

namespace engine {

// ---------------------------------------------------------------- errors, device, stream

// Throws engine::Error naming `what` unless status is cudaSuccess.
void cuda_check(cudaError_t status, const char* what);

// The stream that every kernel, GEMM and copy on the current device is queued
// on (the legacy default stream for now): everything runs in issue order.
cudaStream_t current_stream();

#define ENGINE_CUDA_STRING2(x) #x
#define ENGINE_CUDA_STRING(x) ENGINE_CUDA_STRING2(x)
// After every launch: reports a bad launch configuration at once. Faults inside
// a kernel surface at the next synchronising call (run with
// CUDA_LAUNCH_BLOCKING=1 to have them reported at the launch).
#define CUDA_CHECK_LAUNCH() \
  ::engine::cuda_check(cudaGetLastError(), "kernel launch at " __FILE__ ":" ENGINE_CUDA_STRING(__LINE__))

// Makes a GPU the current device for a scope: kernels run on the current
// device, so every kernel entry point selects the device of its tensors.
class DeviceGuard {
 public:
  explicit DeviceGuard(int index) : target_(index) {
    cuda_check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != target_) cuda_check(cudaSetDevice(target_), "cudaSetDevice");
  }
  explicit DeviceGuard(const Tensor& t) : DeviceGuard(t.device().index) {}
  ~DeviceGuard() {
    if (previous_ != target_) cudaSetDevice(previous_);  // no throwing from a destructor
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int target_;
  int previous_ = 0;
};

// ---------------------------------------------------------------- launches and loops

constexpr int kThreads = 256;           // threads per block of the 1-D kernels
constexpr int64_t kMaxBlocks = 65535;   // beyond this, grid-stride loops take several turns

// Runs kernel<<<blocks, kThreads>>>(args...) with enough blocks to give each of
// n elements a thread (capped); the kernel loops with grid_stride(n).
template <typename... Params, typename... Args>
void launch_1d(int64_t n, void (*kernel)(Params...), Args... args) {
  if (n <= 0) return;
  const int64_t blocks = std::min((n + kThreads - 1) / kThreads, kMaxBlocks);
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, current_stream()>>>(args...);
  CUDA_CHECK_LAUNCH();
}

// Runs a one-block-per-row kernel over rows of `length` elements: the kernel
// loops over rows with block_stride(rows) and within a row with
// thread_stride(length). Many short rows (sums over a ViT's channels, a
// float64 layernorm: hundreds of elements, 10^4 to 10^5 rows) get one warp each, whose
// reductions are shuffles alone; otherwise the block is just wide enough for
// the row (whole warps, at most kThreads), and reductions go through shared
// memory with two barriers.
constexpr int64_t kWarpRowMaxLength = 1024;
constexpr int64_t kWarpRowMinRows = 4096;
template <typename... Params, typename... Args>
void launch_rows(int64_t rows, int64_t length, void (*kernel)(Params...), Args... args) {
  if (rows <= 0) return;
  const bool warp_rows = length <= kWarpRowMaxLength && rows >= kWarpRowMinRows;
  const int threads = warp_rows ? 32 : static_cast<int>(std::clamp<int64_t>((length + 31) / 32 * 32, 32, kThreads));
  const int64_t blocks = std::min(rows, kMaxBlocks);
  kernel<<<static_cast<unsigned>(blocks), threads, 0, current_stream()>>>(args...);
  CUDA_CHECK_LAUNCH();
}

// first, first + step, ... while below last: `for (int64_t i : grid_stride(n))`.
struct StrideRange {
  int64_t first, last, step;
  struct Iterator {
    int64_t value, step;
    __device__ int64_t operator*() const { return value; }
    __device__ Iterator& operator++() {
      value += step;
      return *this;
    }
    __device__ bool operator!=(const Iterator& end) const { return value < end.value; }
  };
  __device__ Iterator begin() const { return {first, step}; }
  __device__ Iterator end() const { return {last, step}; }
};

// Every element index in [0, n) once across the whole grid.
__device__ inline StrideRange grid_stride(int64_t n) {
  return {static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x, n,
          static_cast<int64_t>(gridDim.x) * blockDim.x};
}
// Every row in [0, rows) once, one block per row (launch_rows kernels).
__device__ inline StrideRange block_stride(int64_t rows) { return {blockIdx.x, rows, gridDim.x}; }
// Every index in [0, n) once across the threads of this block.
__device__ inline StrideRange thread_stride(int64_t n) { return {threadIdx.x, n, blockDim.x}; }

// Warp rows: one warp per row, kRowWarps warps per block (an SM runs at most
// 32 blocks, so blocks of one warp would leave it half empty). Warp k of
// block i takes rows i kRowWarps + k, then onwards by the grid's warps: a
// fixed split of the rows for a given grid.
constexpr int kRowWarps = 4;
// The blocks that give each of `rows` rows a warp, at most `cap`.
inline unsigned row_blocks(int64_t rows, int64_t cap) {
  return static_cast<unsigned>(std::min((rows + kRowWarps - 1) / kRowWarps, cap));
}
// This warp's rows.
__device__ inline StrideRange warp_row_stride(int64_t rows) {
  return {static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / 32, rows,
          static_cast<int64_t>(gridDim.x) * kRowWarps};
}

// ---------------------------------------------------------------- block reductions

// __shfl_xor_sync for any trivially copyable value (a float, a double, or a
// small struct such as a value with its index), one 32-bit word at a time.
template <typename T>
__device__ T shuffle_xor(const T& value, int lane_mask) {
  static_assert(sizeof(T) % 4 == 0, "shuffle_xor moves whole 32-bit words");
  unsigned words[sizeof(T) / 4];
  memcpy(words, &value, sizeof(T));
  for (unsigned& word : words) word = __shfl_xor_sync(0xffffffffu, word, lane_mask);
  T out;
  memcpy(&out, words, sizeof(T));
  return out;
}

// Combines the values of all 32 lanes; every lane gets the result.
template <typename T, typename Op>
__device__ T warp_all_reduce(T value, Op op) {
  for (int mask = 16; mask > 0; mask /= 2) value = op(value, shuffle_xor(value, mask));
  return value;
}

// Combines one value per thread of the block (blockDim.x a multiple of 32,
// at most 1024); every thread gets the result. The combination order depends
// only on the block size, so results are deterministic. All threads of the
// block must call it (it synchronises).
template <typename T, typename Op>
__device__ T block_all_reduce(T value, Op op, T identity) {
  if (blockDim.x == 32) return warp_all_reduce(value, op);  // one warp: no shared memory, no barrier
  __shared__ T warp_results[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  value = warp_all_reduce(value, op);
  __syncthreads();  // a previous call may still be reading warp_results
  if (lane == 0) warp_results[warp] = value;
  __syncthreads();
  return warp_all_reduce(lane < warps ? warp_results[lane] : identity, op);
}

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a > b ? a : b; }
};

template <typename T>
__device__ T block_sum(T value) { return block_all_reduce(value, SumOp{}, T(0)); }
template <typename T>
__device__ T block_max(T value) { return block_all_reduce(value, MaxOp{}, T(-INFINITY)); }

// The pieces of log(sum(exp(row))) = max + log(total): the row's maximum and
// total = sum(exp(row - max)), which subtracting the max keeps from
// overflowing. Every thread of the block gets both (softmax, cross-entropy).
template <typename T>
struct RowExpSum {
  T max;
  T total;
};

template <typename T>
__device__ RowExpSum<T> block_row_exp_sum(const T* row, int64_t n) {
  T max = T(-INFINITY);
  for (int64_t i : thread_stride(n)) max = MaxOp{}(max, row[i]);
  max = block_max(max);
  T total = 0;
  for (int64_t i : thread_stride(n)) total += exp(row[i] - max);
  return {max, block_sum(total)};
}

// ---------------------------------------------------------------- deterministic partial sums

// The second stage of the reductions that avoid atomics (parameter gradients
// summed over a batch): out[m * n + i] = the sum of part[(m * rows + r) * n + i]
// over r = 0..rows-1, in an order fixed by the shapes alone, so results are
// bit-reproducible. Two versions: many outputs get a thread each, adding the
// rows in order; few outputs of many rows (a layer's bias gradient from a
// thousand partial rows) get a block per 8 outputs, whose 64 rows of threads
// (16 warps, each 4 rows of 8 lanes) add rows j, j + 64, ... and then their
// 64 sums in row order.
template <typename T>
__global__ void sum_partial_rows_kernel(const T* part, int64_t batches, int64_t rows, int64_t n, T* out) {
  for (int64_t idx : grid_stride(batches * n)) {
    const int64_t m = idx / n, i = idx % n;
    T acc = T(0);
    for (int64_t r = 0; r < rows; ++r) acc += part[(m * rows + r) * n + i];
    out[idx] = acc;
  }
}

// The split version's block: kSplitColumns outputs, kSplitRows rows of
// threads. (H200, [1024, 192] partials: 8 columns 2.0 us against 3.9 us with
// 32 columns a block, as the layer norm's 6 blocks then kept too few loads in
// flight; see bench/RESULTS.md.)
constexpr int kSplitColumns = 8, kSplitRows = 64;

// Block (x, m): outputs m * n + kSplitColumns x + column.
template <typename T>
__global__ void __launch_bounds__(kSplitColumns * kSplitRows)
    sum_partial_rows_split_kernel(const T* part, int64_t rows, int64_t n, T* out) {
  __shared__ T row_sums[kSplitRows][kSplitColumns];
  const int column = threadIdx.x % kSplitColumns, row = threadIdx.x / kSplitColumns;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kSplitColumns + column, m = blockIdx.y;
  T acc = T(0);
  if (i < n) {
#pragma unroll 8
    for (int64_t r = row; r < rows; r += kSplitRows) acc += part[(m * rows + r) * n + i];
  }
  row_sums[row][column] = acc;
  __syncthreads();
  if (row == 0 && i < n) {
    T total = row_sums[0][column];
    for (int r = 1; r < kSplitRows; ++r) total += row_sums[r][column];
    out[m * n + i] = total;
  }
}

template <typename T>
void sum_partial_rows(const T* part, int64_t batches, int64_t rows, int64_t n, T* out) {
  const bool split = rows >= 64 && batches * n <= 65536 && batches <= 65535;
  if (!split) return launch_1d(batches * n, sum_partial_rows_kernel<T>, part, batches, rows, n, out);
  if (n == 0 || batches == 0) return;
  const dim3 grid(static_cast<unsigned>((n + kSplitColumns - 1) / kSplitColumns), static_cast<unsigned>(batches));
  sum_partial_rows_split_kernel<T><<<grid, kSplitColumns * kSplitRows, 0, current_stream()>>>(part, rows, n, out);
  CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------- element types

// The device type of an engine element type (16-bit floats are CUDA's own).
template <typename T> struct DeviceElement { using type = T; };
template <> struct DeviceElement<BFloat16> { using type = __nv_bfloat16; };
template <> struct DeviceElement<Half> { using type = __half; };
template <typename T> using device_t = typename DeviceElement<T>::type;

// Runs body(U{}) with U the unsigned integer of the dtype's size: kernels that
// only move elements (gather, select, fill) move bits, whatever the dtype.
template <typename Body>
void dispatch_bits(DType dtype, Body&& body) {
  switch (dtype_size(dtype)) {
    case 1: body(uint8_t{}); return;
    case 2: body(uint16_t{}); return;
    case 4: body(uint32_t{}); return;
    case 8: body(uint64_t{}); return;
  }
  fail("dispatch_bits: unexpected size of {}", dtype_name(dtype));
}

template <typename T>
const T* data_of(const Tensor& t) {
  return static_cast<const T*>(t.raw_data());
}
template <typename T>
T* mutable_data_of(const Tensor& t) {
  return static_cast<T*>(t.raw_data());
}

// ---------------------------------------------------------------- strided layouts

constexpr int kMaxDims = 8;

template <int K>
struct Offsets {
  int64_t at[K];
};

// Division by a divisor d (1 <= d < 2^31) fixed at launch, as a multiply-high,
// an add and a shift (Granlund & Montgomery), for numerators below 2^31: with
// shift = ceil(log2 d) and magic = floor(2^32 (2^shift - d) / d) + 1,
// n / d = (umulhi(n, magic) + n) >> shift. A 64-bit division costs dozens of
// instructions, and strided kernels divide once per dimension per element.
struct FastDivider {
  uint32_t divisor = 1, magic = 1, shift = 0;
  FastDivider() = default;
  explicit FastDivider(uint32_t d) : divisor(d) {
    while ((uint64_t{1} << shift) < d) ++shift;
    magic = static_cast<uint32_t>((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d) / d + 1);
  }
  __device__ uint32_t divide(uint32_t n) const { return (__umulhi(n, magic) + n) >> shift; }
};

// K tensors iterated together over one shape, each with its own element
// strides (stride 0 broadcasts). Passed to kernels by value.
template <int K>
struct StridedLayout {
  int dims = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[K][kMaxDims] = {};
  bool narrow = false;  // every position fits 31 bits: divide with `dividers`
  FastDivider dividers[kMaxDims];

  // The element offsets in each tensor of the row-major position `linear`.
  __device__ Offsets<K> offsets(int64_t linear) const {
    Offsets<K> out{};
    if (narrow) {
      uint32_t rest = static_cast<uint32_t>(linear);
#pragma unroll
      for (int d = kMaxDims - 1; d >= 0; --d) {
        if (d >= dims) continue;
        const uint32_t quotient = dividers[d].divide(rest);
        const int64_t index = rest - quotient * dividers[d].divisor;
        rest = quotient;
#pragma unroll
        for (int k = 0; k < K; ++k) out.at[k] += index * strides[k][d];
      }
      return out;
    }
#pragma unroll
    for (int d = kMaxDims - 1; d >= 0; --d) {
      if (d >= dims) continue;
      const int64_t index = linear % sizes[d];
      linear /= sizes[d];
#pragma unroll
      for (int k = 0; k < K; ++k) out.at[k] += index * strides[k][d];
    }
    return out;
  }
};

// Picks 32-bit division for a layout whose positions all fit 31 bits.
template <int K>
void set_dividers(StridedLayout<K>& layout) {
  int64_t positions = 1;
  for (int d = 0; d < layout.dims; ++d) positions *= layout.sizes[d];
  layout.narrow = positions > 0 && positions < (int64_t{1} << 31);  // (no launch for an empty tensor)
  if (layout.narrow) {
    for (int d = 0; d < layout.dims; ++d) layout.dividers[d] = FastDivider(static_cast<uint32_t>(layout.sizes[d]));
  }
}

// The layout of `shape` with the given strides per tensor. Size-1 dimensions
// are dropped and neighbours that step uniformly in every tensor are merged
// (a contiguous tensor becomes one dimension), which saves divisions and lets
// higher ranks fit; more than kMaxDims dimensions left is an error.
template <int K>
StridedLayout<K> make_layout(const Shape& shape, const std::array<const Shape*, K>& strides) {
  StridedLayout<K> layout;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    const int last = layout.dims - 1;
    bool merges = last >= 0;
    for (int k = 0; k < K && merges; ++k) merges = layout.strides[k][last] == (*strides[k])[d] * shape[d];
    if (merges) {
      layout.sizes[last] *= shape[d];
      for (int k = 0; k < K; ++k) layout.strides[k][last] = (*strides[k])[d];
      continue;
    }
    check(layout.dims < kMaxDims, "CUDA kernels take at most {} strided dimensions; shape {} needs more",
          kMaxDims, ShapeText{shape});
    layout.sizes[layout.dims] = shape[d];
    for (int k = 0; k < K; ++k) layout.strides[k][layout.dims] = (*strides[k])[d];
    ++layout.dims;
  }
  set_dividers(layout);
  return layout;
}

// ---------------------------------------------------------------- vector accesses

// V consecutive elements moved as one aligned vector access.
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> zero_pack() {
  Pack<T, V> p;
#pragma unroll
  for (int i = 0; i < V; ++i) p.v[i] = T(0);
  return p;
}

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> load_pack(const T* at) {
  return *reinterpret_cast<const Pack<T, V>*>(at);
}

template <typename T, int V>
__device__ __forceinline__ void store_pack(T* at, const Pack<T, V>& p) {
  *reinterpret_cast<Pack<T, V>*>(at) = p;
}

// Whether p is aligned for a vector access of `bytes`.
__host__ __device__ inline bool aligned_for(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

}  // namespace engine

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

// Runs a one-block-per-row kernel over rows of `length` elements: the block
// is just wide enough for the row (whole warps, at most kThreads), and the
// kernel loops over rows with block_stride(rows) and within a row with
// thread_stride(length).
template <typename... Params, typename... Args>
void launch_rows(int64_t rows, int64_t length, void (*kernel)(Params...), Args... args) {
  if (rows <= 0) return;
  const int threads = static_cast<int>(std::clamp<int64_t>((length + 31) / 32 * 32, 32, kThreads));
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

// K tensors iterated together over one shape, each with its own element
// strides (stride 0 broadcasts). Passed to kernels by value.
template <int K>
struct StridedLayout {
  int dims = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[K][kMaxDims] = {};

  // The element offsets in each tensor of the row-major position `linear`.
  __device__ Offsets<K> offsets(int64_t linear) const {
    Offsets<K> out{};
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
          kMaxDims, shape_str(shape));
    layout.sizes[layout.dims] = shape[d];
    for (int k = 0; k < K; ++k) layout.strides[k][layout.dims] = (*strides[k])[d];
    ++layout.dims;
  }
  return layout;
}

}  // namespace engine

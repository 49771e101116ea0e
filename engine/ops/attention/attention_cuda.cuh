// What the two CUDA files of the attention family share: attention.cu (the
// float32 FMA kernels, the kernel slots' CUDA entries) and attention_mma.cu
// (the bf16 tensor-core kernels, used when the GEMM precision is bf16). The
// kernel parameters, small device helpers, and the host side's checks of the
// views, float4 fallback, grid and launch.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/attention/attention_kernels.h"

namespace engine {
namespace attention_cuda {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kTile = 64;  // rows per block (queries or keys), and columns per streamed tile

struct ForwardParams {
  HeadsView<const float> q, k, v;
  HeadsView<float> out;
  const float* active;  // [B, N] or nullptr
  float* lse;           // [B, H, N]
  int n, heads;
  int64_t bh_count;
  float scale_log2;  // scale * log2(e): scores go straight into exp2
};

struct BackwardParams {
  HeadsView<const float> q, k, v, dout;
  HeadsView<float> dq, dk, dv;
  const float* active;  // [B, N] or nullptr
  const float* lse;     // [B, H, N] from the forward
  const float* delta;   // [B, H, N]: dout_i . out_i
  int n, heads;
  int64_t bh_count;
  float scale, scale_log2;
};

// 0 for an active key, -inf for a dropped one or one past N: added to the
// scores (in the log2 domain), it zeroes their probabilities exactly.
__device__ __forceinline__ float key_bias(const float* active, int key, int n) {
  return key < n && (active == nullptr || active[key] != 0.0f) ? 0.0f : -INFINITY;
}

// The online softmax's reference for exponentiating a tile's scores: the
// running max after the tile, or 0 while every key so far is dropped (max =
// -inf), which keeps their probabilities 0 rather than NaN.
__device__ __forceinline__ float softmax_reference(float running_max) {
  return running_max == -INFINITY ? 0.0f : running_max;
}

// The log-sum-exp in the log2 domain, +inf for rows past N or without keys,
// which makes exp2(score - lse) exactly 0 for them.
__device__ __forceinline__ float lse_log2(const float* lse, int row, int n) {
  const float value = row < n ? lse[row] : -INFINITY;
  return value == -INFINITY ? INFINITY : value * kLog2e;
}

// The [N, D] rows of (batch x head) bh of a view: row i at the result + i * view.token.
template <typename T>
__device__ __forceinline__ T* head_rows(const HeadsView<T>& view, int64_t bh, int heads) {
  return view.rows(bh / heads, bh % heads);
}

// ------------------------------------------------------------------ host side

// Every row of a view is moved as float4s (cp.async or float4 loads in,
// float4 or float2 stores out): the view qualifies when each row starts on
// 16 bytes, i.e. its first element does and its batch, head and token
// strides are whole float4s (those of size-1 dimensions never count).
inline bool float4_rows(const Tensor& t) {
  if (reinterpret_cast<uintptr_t>(t.raw_data()) % 16 != 0) return false;
  for (int dim = 0; dim < 3; ++dim) {
    if (t.size(dim) > 1 && t.strides()[dim] % 4 != 0) return false;
  }
  return true;
}

// An input view that does not qualify (a view at an odd offset, or with odd
// strides) is copied first: a fresh contiguous [B, H, N, d] tensor starts on
// an allocation (256-byte aligned) and its strides are multiples of d.
inline Tensor float4_input(const Tensor& t) { return float4_rows(t) ? t : t.clone(); }

// The outputs are views of tensors the ops allocate ([B, H, N, d], or column
// blocks of [B, N, D] and [B, N, 3 D] with d = 32 or 64), which always qualify.
inline void check_outputs_float4(std::initializer_list<const Tensor*> outputs) {
  for (const Tensor* t : outputs) {
    check(float4_rows(*t), "fused_attention (cuda): output {} with strides {} does not have 16-byte aligned rows",
          *t, ShapeText{t->strides()});
  }
}

inline void check_cuda_inputs(const AttentionInputs& in) {
  check(in.q.dtype() == DType::F32, "fused_attention (cuda): only float32 is supported, got q {}", in.q);
  check(in.q.size(2) <= (int64_t{1} << 24), "fused_attention (cuda): N = {} tokens is too many (q {})", in.q.size(2),
        ShapeText{in.q.shape()});
}

// Grid: x = the blocks of `rows` along N (consecutive blocks share one
// head's K and V in L2), y = batch x head (blocks stride over it beyond 65535).
inline dim3 grid_for(int64_t n, int64_t bh_count, int64_t rows = kTile) {
  return dim3(static_cast<unsigned>((n + rows - 1) / rows), static_cast<unsigned>(std::min<int64_t>(bh_count, 65535)));
}

// Dynamic shared memory beyond 48 KB must be opted into, per kernel and
// device: set before every launch (cheap next to the kernel).
template <typename Params>
void launch(void (*kernel)(Params), int threads, int smem_bytes, dim3 grid, const Params& params) {
  cuda_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes),
             "fused_attention: cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  kernel<<<grid, threads, smem_bytes, current_stream()>>>(params);
  CUDA_CHECK_LAUNCH();
}

// The bf16 tensor-core kernels (attention_mma.cu): whether they take this
// head dimension, and their launches (params prepared by attention.cu; the
// backward's delta already computed).
bool mma_head_dim(int64_t head_dim);
void forward_mma(const ForwardParams& params, int64_t head_dim);
void backward_mma(const BackwardParams& params, int64_t head_dim);

}  // namespace attention_cuda
}  // namespace engine

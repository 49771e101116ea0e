// Host emulation of the CUDA device API that engine/ops/attention/attention.cu
// uses (dev-only harness, see ../README.md). Threads of a block are
// std::threads; the per-thread built-ins are thread_local; shared memory,
// __syncthreads, warp shuffles and cp.async go through emu_runtime.h.
#pragma once
#include <math.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#define __device__
#define __global__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__

namespace emu {
void note_misaligned(const void* address);
}

// float4 as the GPU sees it: 16-byte aligned. Copying one from memory checks
// the source's alignment (a misaligned float4 load or store faults on the GPU).
struct alignas(16) float4 {
  float x, y, z, w;
  float4() = default;
  constexpr float4(float a, float b, float c, float d) : x(a), y(b), z(c), w(d) {}
  float4(const float4& o) : x(o.x), y(o.y), z(o.z), w(o.w) {
    if (reinterpret_cast<uintptr_t>(&o) % 16 != 0) emu::note_misaligned(&o);
  }
  float4& operator=(const float4& o) {
    if (reinterpret_cast<uintptr_t>(this) % 16 != 0) emu::note_misaligned(this);
    x = o.x, y = o.y, z = o.z, w = o.w;
    return *this;
  }
};
static inline float4 make_float4(float x, float y, float z, float w) { return float4(x, y, z, w); }

// float2 likewise (8-byte aligned; attention_mma.cu's output stores).
struct alignas(8) float2 {
  float x, y;
  float2() = default;
  constexpr float2(float a, float b) : x(a), y(b) {}
  float2(const float2& o) : x(o.x), y(o.y) {
    if (reinterpret_cast<uintptr_t>(&o) % 8 != 0) emu::note_misaligned(&o);
  }
  float2& operator=(const float2& o) {
    if (reinterpret_cast<uintptr_t>(this) % 8 != 0) emu::note_misaligned(this);
    x = o.x, y = o.y;
    return *this;
  }
};
static inline float2 make_float2(float x, float y) { return float2(x, y); }

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

using std::max;
using std::min;

enum cudaError_t { cudaSuccess = 0 };
using cudaStream_t = void*;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

namespace emu {
void set_max_dynamic_smem(const void* kernel, int bytes);
}
template <typename Fn>
cudaError_t cudaFuncSetAttribute(Fn* kernel, cudaFuncAttribute, int bytes) {
  emu::set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), bytes);
  return cudaSuccess;
}

// Barriers and warp exchanges (emu_runtime.cpp).
void __syncthreads();
void __syncwarp(unsigned mask = 0xffffffffu);
float __shfl_xor_sync(unsigned mask, float value, int lane_mask, int width = 32);


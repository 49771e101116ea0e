// CUDA kernels of the attention family: flash-style fused attention in
// float32 (FMA on the CUDA cores, no tensor cores), head_dim 32 or 64. The
// contracts are in attention_kernels.h, the reference in attention_cpu.cpp.
// These entry points are the kernel slots' CUDA kernels in both precisions:
// in bf16 mode (gemm_precision(), matmul.h) they hand the same parameters to
// the tensor-core kernels of attention_mma.cu; what both files share is in
// attention_cuda.cuh.
//
// Every operand is a strided view (HeadsView: a pointer and batch, head and
// token strides, d contiguous), so the same kernels read q, k, v from a
// [B, H, N, d] tensor or straight from the packed qkv projection [B, N, 3D],
// and write out, dq, dk, dv head-major or token-major ([B, N, D], the column
// blocks of d(qkv) [B, N, 3D]). A block resolves its (batch, head)'s row
// pointers once; tile loads step a pointer by whole rows, stores likewise.
// Rows move as float4 (cp.async in, float4 stores out), so every row of a
// view must start on 16 bytes: its first element and its batch, head and
// token strides multiples of 4 floats. With d = 32 or 64 (so D = H d and 3 D
// are multiples of 4 too) every view of a tensor that starts on 16 bytes
// qualifies: the ops' outputs (fresh allocations, 256-byte aligned), a qkv
// projection's output, a [B, H, N, d] tensor. An input view that does not (a
// view at an odd offset or with odd strides) is copied to a contiguous
// tensor first (float4_input); an output view that does not is an error. A
// row is d contiguous floats (128 or 256 bytes, whole 128-byte lines in both
// layouts), so a tile read from qkv touches as many lines as one read from
// a [B, H, N, d] tensor.
//
// Every kernel works on 64 x 64 tiles with 128 threads (4 warps):
//
//   forward   one block per (batch x head, 64 query rows). Q stays in shared
//             memory; K and V go through it a 64-key tile at a time (cp.async,
//             the next tile's K loading while this tile's P V runs, the next
//             V while the next S = Q K^T runs). The running row max and sum
//             (online softmax) and the output rows stay in registers; the
//             output and the log-sum-exp are written once at the end.
//   backward  delta_i = dout_i . out_i first (one warp per row); then two
//             kernels that each recompute P = exp(S - lse) per tile:
//             dK/dV: one block per (batch x head, 64 keys), looping over the
//             query tiles: dV += P^T dO, dK += dS^T Q, with dK and dV in
//             registers.
//             dQ: one block per (batch x head, 64 query rows), looping over
//             the key tiles: dQ += dS K.
//             A separate dQ pass recomputes S and dP once more (14 N^2 d
//             FLOPs in all instead of 10) but needs no atomics, so gradients
//             are bit-reproducible.
//
// Inside a block, thread (warp w, lane = 8 quad + c) owns the 4 rows
// 16 w + quad + 4 y (y < 4) of a tile and, of a 64-wide [rows, cols] tile
// of scores, the 8 columns c + 8 x (x < 8); of a [rows, d] result, the
// float4 columns 32 z + 4 c (z < d / 32). So:
//   * a row's 8 owners are 8 consecutive lanes: row max and sum are three
//     xor-shuffles, no shared memory;
//   * in a 64 x 64 x d product, a thread does 128 FMAs per 12 float4 loads
//     from shared memory (its 4 rows and 8 columns, 4 steps of d at a time;
//     the loads run along d, so all tiles keep their natural [row][d] layout),
//     which keeps the FMA pipe, not shared memory, the limit;
//   * shared rows are padded (d + 4 floats for [rows, d] tiles, 64 + 8 for
//     score tiles) so that every float4 load of a warp (4 rows x 8 columns)
//     and every scalar store of scores hits distinct banks.
// Warps whose 16 rows all lie past N skip the arithmetic (N = 197 fills
// 13 of the 16 warps of its 4 tiles) but still take part in the copies and
// barriers. Only the last tile of keys may be partial: its score columns are
// computed in a narrower variant (8, 4, 2 or 1 column per thread), and its
// P V products stop at the last key, so N = 197 does about 7% more than the
// needed work (208 rows x 200 columns) instead of 69% (256 x 256).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/attention/attention_cuda.cuh"
#include "engine/ops/attention/attention_kernels.h"
#include "engine/ops/matmul/matmul.h"

namespace engine {

namespace {

using namespace attention_cuda;  // kTile (rows per block, columns per tile), params, host checks

constexpr int kBlockThreads = 128;  // 4 warps x 16 rows
constexpr int kScoreLd = kTile + 8;  // row stride (floats) of the [64, 64] score tiles in shared memory
// Shared memory allows 3 forward blocks (71 KB each at head_dim 64) or 2
// backward blocks (88 KB) on an H100/H200 SM (228 KB). The forward fits 168
// registers (ptxas's choice at head_dim 64, 128 at 32; no spills: 3 blocks'
// worth); the backward kernels keep dK and dV (or dQ) and two score tiles
// live, so they are given up to 255 registers (2 blocks' worth): ptxas
// (CUDA 13.0, sm_90a) takes 226 (dK/dV) and 242 (dQ) at head_dim 64, without
// spilling.
constexpr int kBackwardBlocksPerSm = 2;

// Row stride (floats) of a [64, D] tile in shared memory; a multiple of 4
// (float4 rows) that is 4 mod 32 (4 consecutive rows start in distinct banks).
template <int D>
constexpr int tile_ld() {
  return D + 4;
}
template <int D>
constexpr int tile_floats() {
  return kTile * tile_ld<D>();
}
constexpr int kScoreFloats = kTile * kScoreLd;

// ------------------------------------------------------------------ helpers

// 16 bytes global -> shared without passing through registers; with
// valid = false the destination is zero-filled (rows past N) and nothing is
// read. cp.async needs sm_80; the plain copy is for other device passes.
__device__ __forceinline__ void copy16_async(float* dst, const float* src, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst_shared = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst_shared), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
#else
  *reinterpret_cast<float4*>(dst) = valid ? *reinterpret_cast<const float4*>(src) : make_float4(0.f, 0.f, 0.f, 0.f);
#endif
}

// Closes the group of copies issued so far by this thread.
__device__ __forceinline__ void async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most `Pending` of this thread's groups are still in flight
// (a __syncthreads() after it makes every thread's copies visible).
template <int Pending>
__device__ __forceinline__ void async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
#endif
}

// Rows [row0, row0 + 64) of a [n, D] matrix (row i at src + i * ld, 16-byte
// aligned) into a [64, D] shared tile, zeros past row n (so partial tiles add
// exact zeros). Asynchronous. Thread x copies float4 column x % (D / 4) of
// rows x / (D / 4) + k step (step = 128 / (D / 4) rows); its source pointer
// advances by step rows at a time, so a runtime row stride costs one 64-bit
// add per copy, not an address register per copy.
template <int D>
__device__ __forceinline__ void load_tile_async(float* tile, const float* src, int64_t ld, int row0, int n) {
  constexpr int kChunks = D / 4;  // float4 per row
  constexpr int kStep = kBlockThreads / kChunks;
  static_assert(kBlockThreads % kChunks == 0, "whole copies per thread");
  const int r = static_cast<int>(threadIdx.x) / kChunks, c4 = static_cast<int>(threadIdx.x) % kChunks * 4;
  const float* from = src + (row0 + r) * ld + c4;
#pragma unroll
  for (int k = 0; k < kTile / kStep; ++k) {
    const bool valid = row0 + r + k * kStep < n;
    copy16_async(tile + (r + k * kStep) * tile_ld<D>() + c4, valid ? from : src, valid);
    from += kStep * ld;
  }
}

// What each thread owns in a tile (see the top of the file).
struct Owner {
  int warp, quad, c;
  __device__ Owner()
      : warp(static_cast<int>(threadIdx.x) / 32),
        quad(static_cast<int>(threadIdx.x) % 32 / 8),
        c(static_cast<int>(threadIdx.x) % 8) {}
  __device__ int first_row() const { return warp * 16 + quad; }
  __device__ int row(int y) const { return first_row() + 4 * y; }  // y < 4
  __device__ int col(int x) const { return c + 8 * x; }            // x < 8
};

__device__ __forceinline__ float component(const float4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// The max (or sum) over the 8 lanes that share a row: lanes 8 quad + c, c < 8.
__device__ __forceinline__ float row_max(float v) {
#pragma unroll
  for (int mask = 1; mask < 8; mask *= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, mask));
  return v;
}
__device__ __forceinline__ float row_sum(float v) {
#pragma unroll
  for (int mask = 1; mask < 8; mask *= 2) v += __shfl_xor_sync(0xffffffffu, v, mask);
  return v;
}

// acc[y][x] += A[row(y)] . B[col(x)] over the D columns of two [64, D] shared
// tiles, for x < XN (the other columns are left alone). The loop runs along
// d in float4 steps: per step 4 A loads (4 distinct rows per warp, the 8
// lanes of a quad broadcast) and XN B loads (8 consecutive rows per warp)
// feed 16 XN FMAs.
template <int D, int XN>
__device__ __forceinline__ void tile_dots(const float* A, const float* B, const Owner& t, float (&acc)[4][8]) {
  constexpr int ld = tile_ld<D>();
  const float* a = A + t.first_row() * ld;
  const float* b = B + t.c * ld;
#pragma unroll 2
  for (int k = 0; k < D; k += 4) {
    float4 av[4];
#pragma unroll
    for (int y = 0; y < 4; ++y) av[y] = *reinterpret_cast<const float4*>(a + 4 * y * ld + k);
#pragma unroll
    for (int x = 0; x < XN; ++x) {
      const float4 bv = *reinterpret_cast<const float4*>(b + 8 * x * ld + k);
#pragma unroll
      for (int y = 0; y < 4; ++y) {
        float s = acc[y][x];
        s = fmaf(av[y].x, bv.x, s);
        s = fmaf(av[y].y, bv.y, s);
        s = fmaf(av[y].z, bv.z, s);
        s = fmaf(av[y].w, bv.w, s);
        acc[y][x] = s;
      }
    }
  }
}

// tile_dots over the first `cols` columns of B (1..64): the full variant, or
// a narrower one for a partial last tile (rounded up to 1, 2 or 4 columns per
// thread; the extra columns see zero rows of B).
template <int D>
__device__ __forceinline__ void tile_dots_upto(int cols, const float* A, const float* B, const Owner& t,
                                               float (&acc)[4][8]) {
  if (cols > 32) {
    tile_dots<D, 8>(A, B, t, acc);
  } else if (cols > 16) {
    tile_dots<D, 4>(A, B, t, acc);
  } else if (cols > 8) {
    tile_dots<D, 2>(A, B, t, acc);
  } else {
    tile_dots<D, 1>(A, B, t, acc);
  }
}

// out[y][4 z + e] += sum_{j < J} P[row(y)][j] M[j][32 z + 4 c + e] with P a
// [64, 64] score tile and M a [64, D] tile in shared memory; J is a multiple
// of 4. Per 4 j: 4 float4 loads of P (the thread's rows) and 4 D / 32 of M
// (a warp reads 128 contiguous bytes) feed D / 2 x 4 FMAs.
template <int D>
__device__ __forceinline__ void tile_products(const float* P, const float* M, const Owner& t, int J,
                                              float (&out)[4][D / 8]) {
  constexpr int ld = tile_ld<D>();
  const float* p = P + t.first_row() * kScoreLd;
  const float* m = M + 4 * t.c;
#pragma unroll 2
  for (int j = 0; j < J; j += 4) {
    float4 pv[4];
#pragma unroll
    for (int y = 0; y < 4; ++y) pv[y] = *reinterpret_cast<const float4*>(p + 4 * y * kScoreLd + j);
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) {
#pragma unroll
      for (int z = 0; z < D / 32; ++z) {
        const float4 mv = *reinterpret_cast<const float4*>(m + (j + jj) * ld + 32 * z);
#pragma unroll
        for (int y = 0; y < 4; ++y) {
          const float pj = component(pv[y], jj);
          out[y][4 * z + 0] = fmaf(pj, mv.x, out[y][4 * z + 0]);
          out[y][4 * z + 1] = fmaf(pj, mv.y, out[y][4 * z + 1]);
          out[y][4 * z + 2] = fmaf(pj, mv.z, out[y][4 * z + 2]);
          out[y][4 * z + 3] = fmaf(pj, mv.w, out[y][4 * z + 3]);
        }
      }
    }
  }
}

// The thread's scores into a [64, 64] shared tile (stores hit 32 distinct banks).
__device__ __forceinline__ void store_scores(float* P, const Owner& t, const float (&s)[4][8]) {
#pragma unroll
  for (int y = 0; y < 4; ++y) {
#pragma unroll
    for (int x = 0; x < 8; ++x) P[t.row(y) * kScoreLd + t.col(x)] = s[y][x];
  }
}

// Rows [row0, row0 + 64) of the thread's result into a [n, D] matrix (row i
// at dst + i * ld, 16-byte aligned), times `factor`.
template <int D>
__device__ __forceinline__ void store_rows(float* dst, int64_t ld, int row0, int n, const Owner& t,
                                          const float (&acc)[4][D / 8], const float (&factor)[4]) {
  float* to = dst + (row0 + t.first_row()) * ld + 4 * t.c;
#pragma unroll
  for (int y = 0; y < 4; ++y, to += 4 * ld) {
    if (row0 + t.row(y) >= n) continue;
#pragma unroll
    for (int z = 0; z < D / 32; ++z) {
      const float4 v = make_float4(acc[y][4 * z] * factor[y], acc[y][4 * z + 1] * factor[y],
                                   acc[y][4 * z + 2] * factor[y], acc[y][4 * z + 3] * factor[y]);
      *reinterpret_cast<float4*>(to + 32 * z) = v;
    }
  }
}

// Rounds a count of keys or queries up to the 4 that tile_products takes at a time.
__device__ __forceinline__ int round_up4(int n) { return (n + 3) & ~3; }

// ------------------------------------------------------------------ forward

template <int D>
constexpr int forward_smem_floats() {
  return 3 * tile_floats<D>() + kScoreFloats + kTile;  // Q, K, V, P, key bias
}

template <int D>
__global__ void __launch_bounds__(kBlockThreads) attention_forward_kernel_impl(ForwardParams p) {
  extern __shared__ float4 shared_mem[];
  float* Qs = reinterpret_cast<float*>(shared_mem);
  float* Ks = Qs + tile_floats<D>();
  float* Vs = Ks + tile_floats<D>();
  float* Ps = Vs + tile_floats<D>();
  float* bias = Ps + kScoreFloats;
  const Owner t;
  const int n = p.n, row0 = static_cast<int>(blockIdx.x) * kTile, tiles = (n + kTile - 1) / kTile;
  const bool live = row0 + 16 * t.warp < n;  // warp-uniform: does the warp own any row below n?

  for (int64_t bh = blockIdx.y; bh < p.bh_count; bh += gridDim.y) {
    const float* k = head_rows(p.k, bh, p.heads);
    const float* v = head_rows(p.v, bh, p.heads);
    const float* active = p.active ? p.active + (bh / p.heads) * n : nullptr;
    // Groups in flight: {Q, K_0}, {V_0}; then per tile {K_next}, {V_next}
    // (empty after the last tile), so every wait below is "all but the newest".
    load_tile_async<D>(Qs, head_rows(p.q, bh, p.heads), p.q.token, row0, n);
    load_tile_async<D>(Ks, k, p.k.token, 0, n);
    if (threadIdx.x < kTile) bias[threadIdx.x] = key_bias(active, threadIdx.x, n);
    async_commit();
    load_tile_async<D>(Vs, v, p.v.token, 0, n);
    async_commit();

    float m[4], l[4], o[4][D / 8];  // running max (log2 domain), this thread's share of the sum, output
#pragma unroll
    for (int y = 0; y < 4; ++y) {
      m[y] = -INFINITY;
      l[y] = 0.0f;
#pragma unroll
      for (int e = 0; e < D / 8; ++e) o[y][e] = 0.0f;
    }

    for (int tile = 0; tile < tiles; ++tile) {
      const int key0 = tile * kTile, keys = min(kTile, n - key0);
      async_wait<1>();  // Q and this tile's K and bias
      __syncthreads();
      float s[4][8] = {};
      if (live) {
        tile_dots_upto<D>(keys, Qs, Ks, t, s);
#pragma unroll
        for (int x = 0; x < 8; ++x) {
          const float b = bias[t.col(x)];
#pragma unroll
          for (int y = 0; y < 4; ++y) s[y][x] = fmaf(s[y][x], p.scale_log2, b);
        }
      }
      __syncthreads();  // every warp is done with K and the bias: load the next tile's
      if (tile + 1 < tiles) {
        load_tile_async<D>(Ks, k, p.k.token, key0 + kTile, n);
        if (threadIdx.x < kTile) bias[threadIdx.x] = key_bias(active, key0 + kTile + threadIdx.x, n);
      }
      async_commit();
      if (live) {
        // Online softmax: rescale what the earlier tiles summed to the new max.
#pragma unroll
        for (int y = 0; y < 4; ++y) {
          float tile_max = s[y][0];
#pragma unroll
          for (int x = 1; x < 8; ++x) tile_max = fmaxf(tile_max, s[y][x]);
          const float m_new = fmaxf(m[y], row_max(tile_max));
          const float m_ref = softmax_reference(m_new);
          const float alpha = exp2f(m[y] - m_ref);  // 0 on the first live tile
          float sum = 0.0f;
#pragma unroll
          for (int x = 0; x < 8; ++x) {
            s[y][x] = exp2f(s[y][x] - m_ref);
            sum += s[y][x];
          }
          l[y] = l[y] * alpha + sum;
#pragma unroll
          for (int e = 0; e < D / 8; ++e) o[y][e] *= alpha;
          m[y] = m_new;
        }
        store_scores(Ps, t, s);  // read back only by this warp's lanes (their own rows)
      }
      async_wait<1>();  // this tile's V
      __syncthreads();
      if (live) tile_products<D>(Ps, Vs, t, round_up4(keys), o);
      __syncthreads();  // every warp is done with V (and P)
      if (tile + 1 < tiles) load_tile_async<D>(Vs, v, p.v.token, key0 + kTile, n);
      async_commit();
    }

    float inv[4];
#pragma unroll
    for (int y = 0; y < 4; ++y) {
      const float total = row_sum(l[y]);
      inv[y] = total > 0.0f ? 1.0f / total : 0.0f;  // a row without active keys gives zeros
      const int row = row0 + t.row(y);
      if (t.c == 0 && row < n) p.lse[bh * n + row] = total > 0.0f ? (m[y] + log2f(total)) * kLn2 : -INFINITY;
    }
    store_rows<D>(head_rows(p.out, bh, p.heads), p.out.token, row0, n, t, o, inv);
  }
}

// ------------------------------------------------------------------ backward

// delta_i = dout_i . out_i for the rows (bh, i) of [B, H, N] (contiguous),
// one warp per row (d columns spread over lanes).
__global__ void attention_delta_kernel(HeadsView<const float> out, HeadsView<const float> dout, float* delta, int n,
                                       int heads, int d, int64_t rows) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows; row += warps) {
    const int64_t bh = row / n, i = row % n;
    const float* o = head_rows(out, bh, heads) + i * out.token;
    const float* g = head_rows(dout, bh, heads) + i * dout.token;
    float sum = 0.0f;
    for (int c = lane; c < d; c += 32) sum = fmaf(o[c], g[c], sum);
#pragma unroll
    for (int mask = 16; mask > 0; mask /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, mask);
    if (lane == 0) delta[row] = sum;
  }
}

template <int D>
constexpr int dkdv_smem_floats() {
  return 4 * tile_floats<D>() + kScoreFloats + 2 * kTile;  // K, V, Q, dO, P / dS, lse, delta
}

// dK and dV for 64 keys: the loop runs over the query tiles; the scores are
// transposed (rows = keys, columns = queries).
template <int D>
__global__ void __launch_bounds__(kBlockThreads, kBackwardBlocksPerSm) attention_dkdv_kernel_impl(BackwardParams p) {
  extern __shared__ float4 shared_mem[];
  float* Ks = reinterpret_cast<float*>(shared_mem);
  float* Vs = Ks + tile_floats<D>();
  float* Qs = Vs + tile_floats<D>();
  float* dOs = Qs + tile_floats<D>();
  float* Ts = dOs + tile_floats<D>();  // P^T, then dS^T
  float* lse_s = Ts + kScoreFloats;
  float* delta_s = lse_s + kTile;
  const Owner t;
  const int n = p.n, key0 = static_cast<int>(blockIdx.x) * kTile, tiles = (n + kTile - 1) / kTile;
  const bool live = key0 + 16 * t.warp < n;

  for (int64_t bh = blockIdx.y; bh < p.bh_count; bh += gridDim.y) {
    const float* q = head_rows(p.q, bh, p.heads);
    const float* dout = head_rows(p.dout, bh, p.heads);
    const float* active = p.active ? p.active + (bh / p.heads) * n : nullptr;
    const float* lse = p.lse + bh * n;
    const float* delta = p.delta + bh * n;
    load_tile_async<D>(Ks, head_rows(p.k, bh, p.heads), p.k.token, key0, n);
    load_tile_async<D>(Vs, head_rows(p.v, bh, p.heads), p.v.token, key0, n);
    load_tile_async<D>(Qs, q, p.q.token, 0, n);
    load_tile_async<D>(dOs, dout, p.dout.token, 0, n);
    if (threadIdx.x < kTile) {
      lse_s[threadIdx.x] = lse_log2(lse, threadIdx.x, n);
      delta_s[threadIdx.x] = threadIdx.x < n ? delta[threadIdx.x] : 0.0f;
    }
    async_commit();

    float bias[4], dk[4][D / 8], dv[4][D / 8];
#pragma unroll
    for (int y = 0; y < 4; ++y) {
      bias[y] = key_bias(active, key0 + t.row(y), n);
#pragma unroll
      for (int e = 0; e < D / 8; ++e) dk[y][e] = dv[y][e] = 0.0f;
    }

    for (int tile = 0; tile < tiles; ++tile) {
      const int query0 = tile * kTile, queries = min(kTile, n - query0);
      async_wait<0>();
      __syncthreads();
      if (live) {
        float s[4][8] = {}, dp[4][8] = {};
        tile_dots_upto<D>(queries, Ks, Qs, t, s);
#pragma unroll
        for (int x = 0; x < 8; ++x) {
          const float lse_x = lse_s[t.col(x)];
#pragma unroll
          for (int y = 0; y < 4; ++y) s[y][x] = exp2f(fmaf(s[y][x], p.scale_log2, bias[y]) - lse_x);  // P^T
        }
        store_scores(Ts, t, s);  // rows are this warp's own keys
        __syncwarp();
        tile_products<D>(Ts, dOs, t, round_up4(queries), dv);  // dV += P^T dO
        tile_dots_upto<D>(queries, Vs, dOs, t, dp);             // dP^T = V dO^T
#pragma unroll
        for (int x = 0; x < 8; ++x) {
          const float delta_x = delta_s[t.col(x)];
#pragma unroll
          for (int y = 0; y < 4; ++y) s[y][x] *= dp[y][x] - delta_x;  // dS^T
        }
        __syncwarp();  // every lane has read its rows of P^T
        store_scores(Ts, t, s);
        __syncwarp();
        tile_products<D>(Ts, Qs, t, round_up4(queries), dk);  // dK += dS^T Q (times scale at the end)
      }
      __syncthreads();  // every warp is done with Q, dO, lse and delta: load the next query tile
      if (tile + 1 < tiles) {
        const int next = query0 + kTile;
        load_tile_async<D>(Qs, q, p.q.token, next, n);
        load_tile_async<D>(dOs, dout, p.dout.token, next, n);
        if (threadIdx.x < kTile) {
          lse_s[threadIdx.x] = lse_log2(lse, next + threadIdx.x, n);
          delta_s[threadIdx.x] = next + static_cast<int>(threadIdx.x) < n ? delta[next + threadIdx.x] : 0.0f;
        }
      }
      async_commit();
    }

    const float ones[4] = {1.0f, 1.0f, 1.0f, 1.0f}, scales[4] = {p.scale, p.scale, p.scale, p.scale};
    store_rows<D>(head_rows(p.dk, bh, p.heads), p.dk.token, key0, n, t, dk, scales);
    store_rows<D>(head_rows(p.dv, bh, p.heads), p.dv.token, key0, n, t, dv, ones);
  }
}

template <int D>
constexpr int dq_smem_floats() {
  return 4 * tile_floats<D>() + kScoreFloats + kTile;  // Q, dO, K, V, dS, key bias
}

// dQ for 64 query rows: the loop runs over the key tiles.
template <int D>
__global__ void __launch_bounds__(kBlockThreads, kBackwardBlocksPerSm) attention_dq_kernel_impl(BackwardParams p) {
  extern __shared__ float4 shared_mem[];
  float* Qs = reinterpret_cast<float*>(shared_mem);
  float* dOs = Qs + tile_floats<D>();
  float* Ks = dOs + tile_floats<D>();
  float* Vs = Ks + tile_floats<D>();
  float* dSs = Vs + tile_floats<D>();
  float* bias = dSs + kScoreFloats;
  const Owner t;
  const int n = p.n, row0 = static_cast<int>(blockIdx.x) * kTile, tiles = (n + kTile - 1) / kTile;
  const bool live = row0 + 16 * t.warp < n;

  for (int64_t bh = blockIdx.y; bh < p.bh_count; bh += gridDim.y) {
    const float* k = head_rows(p.k, bh, p.heads);
    const float* v = head_rows(p.v, bh, p.heads);
    const float* active = p.active ? p.active + (bh / p.heads) * n : nullptr;
    // Groups: {Q, dO, K_0, V_0}; then per tile {V_next} (during dQ += dS K)
    // and {K_next} (after it), both waited for at the top of the next tile.
    load_tile_async<D>(Qs, head_rows(p.q, bh, p.heads), p.q.token, row0, n);
    load_tile_async<D>(dOs, head_rows(p.dout, bh, p.heads), p.dout.token, row0, n);
    load_tile_async<D>(Ks, k, p.k.token, 0, n);
    load_tile_async<D>(Vs, v, p.v.token, 0, n);
    if (threadIdx.x < kTile) bias[threadIdx.x] = key_bias(active, threadIdx.x, n);
    async_commit();

    float lse[4], delta[4], dq[4][D / 8];
#pragma unroll
    for (int y = 0; y < 4; ++y) {
      const int row = row0 + t.row(y);
      lse[y] = lse_log2(p.lse + bh * n, row, n);
      delta[y] = row < n ? p.delta[bh * n + row] : 0.0f;
#pragma unroll
      for (int e = 0; e < D / 8; ++e) dq[y][e] = 0.0f;
    }

    for (int tile = 0; tile < tiles; ++tile) {
      const int key0 = tile * kTile, keys = min(kTile, n - key0);
      async_wait<0>();
      __syncthreads();
      if (live) {
        float s[4][8] = {}, dp[4][8] = {};
        tile_dots_upto<D>(keys, Qs, Ks, t, s);
#pragma unroll
        for (int x = 0; x < 8; ++x) {
          const float b = bias[t.col(x)];
#pragma unroll
          for (int y = 0; y < 4; ++y) s[y][x] = exp2f(fmaf(s[y][x], p.scale_log2, b) - lse[y]);  // P
        }
        tile_dots_upto<D>(keys, dOs, Vs, t, dp);  // dP = dO V^T
#pragma unroll
        for (int y = 0; y < 4; ++y) {
#pragma unroll
          for (int x = 0; x < 8; ++x) s[y][x] *= dp[y][x] - delta[y];  // dS
        }
        store_scores(dSs, t, s);  // read back only by this warp
      }
      __syncthreads();  // every warp is done with V: load the next tile's during dQ += dS K
      if (tile + 1 < tiles) load_tile_async<D>(Vs, v, p.v.token, key0 + kTile, n);
      async_commit();
      if (live) tile_products<D>(dSs, Ks, t, round_up4(keys), dq);
      __syncthreads();  // every warp is done with K, the bias and dS
      if (tile + 1 < tiles) {
        load_tile_async<D>(Ks, k, p.k.token, key0 + kTile, n);
        if (threadIdx.x < kTile) bias[threadIdx.x] = key_bias(active, key0 + kTile + threadIdx.x, n);
      }
      async_commit();
    }

    const float scales[4] = {p.scale, p.scale, p.scale, p.scale};
    store_rows<D>(head_rows(p.dq, bh, p.heads), p.dq.token, row0, n, t, dq, scales);
  }
}

// ------------------------------------------------------------------ host side

template <typename Body>
void with_head_dim(int64_t d, const Tensor& q, const Body& body) {
  if (d == 32) return body(std::integral_constant<int, 32>{});
  if (d == 64) return body(std::integral_constant<int, 64>{});
  fail("fused_attention (cuda): head_dim {} is not supported (32 or 64), q is {} [B, H, N, d]", d,
       shape_str(q.shape()));
}

// In bf16 mode (the GEMMs' mixed precision, matmul.h) the tensor-core kernels
// of attention_mma.cu run at the head dimensions they take; in float32 mode
// (and at other head dimensions) the FMA kernels above.
bool use_mma(int64_t head_dim) { return gemm_precision() == GemmPrecision::BFloat16 && mma_head_dim(head_dim); }

void attention_forward_cuda(const AttentionInputs& in, const Tensor& out, const Tensor& lse) {
  DeviceGuard guard(out);
  check_cuda_inputs(in);
  const int64_t heads = in.q.size(1), n = in.q.size(2), d = in.q.size(3), bh_count = in.q.size(0) * heads;
  const Tensor q = float4_input(in.q), k = float4_input(in.k), v = float4_input(in.v);
  check_outputs_float4({&out});
  ForwardParams params{heads_view<const float>(q),
                       heads_view<const float>(k),
                       heads_view<const float>(v),
                       heads_view<float>(out),
                       in.key_active.defined() ? data_of<float>(in.key_active) : nullptr,
                       mutable_data_of<float>(lse),
                       static_cast<int>(n),
                       static_cast<int>(heads),
                       bh_count,
                       static_cast<float>(in.scale * 1.4426950408889634)};
  if (use_mma(d)) return forward_mma(params, d);
  with_head_dim(d, in.q, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    launch(attention_forward_kernel_impl<D>, kBlockThreads, forward_smem_floats<D>() * 4, grid_for(n, bh_count), params);
  });
}

void attention_backward_cuda(const AttentionInputs& in, const Tensor& out, const Tensor& lse, const Tensor& dout,
                             const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  DeviceGuard guard(dq);
  check_cuda_inputs(in);
  const int64_t heads = in.q.size(1), n = in.q.size(2), d = in.q.size(3), bh_count = in.q.size(0) * heads;
  const Tensor q = float4_input(in.q), k = float4_input(in.k), v = float4_input(in.v), g = float4_input(dout);
  check_outputs_float4({&dq, &dk, &dv});
  // delta = rowsum(dout * out), [B, H, N]; scratch freed when this returns
  // (the caching allocator reuses it only for work queued after these kernels).
  // Read a float at a time: out needs no alignment.
  Tensor delta = Tensor::empty({bh_count * n}, DType::F32, dq.device());
  const int64_t rows = bh_count * n;
  const int64_t delta_blocks = std::min<int64_t>((rows * 32 + 255) / 256, kMaxBlocks);
  attention_delta_kernel<<<static_cast<unsigned>(delta_blocks), 256, 0, current_stream()>>>(
      heads_view<const float>(out), heads_view<const float>(g), mutable_data_of<float>(delta), static_cast<int>(n),
      static_cast<int>(heads), static_cast<int>(d), rows);
  CUDA_CHECK_LAUNCH();
  BackwardParams params{heads_view<const float>(q),
                        heads_view<const float>(k),
                        heads_view<const float>(v),
                        heads_view<const float>(g),
                        heads_view<float>(dq),
                        heads_view<float>(dk),
                        heads_view<float>(dv),
                        in.key_active.defined() ? data_of<float>(in.key_active) : nullptr,
                        data_of<float>(lse),
                        data_of<float>(delta),
                        static_cast<int>(n),
                        static_cast<int>(heads),
                        bh_count,
                        static_cast<float>(in.scale),
                        static_cast<float>(in.scale * 1.4426950408889634)};
  if (use_mma(d)) return backward_mma(params, d);
  with_head_dim(d, in.q, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    launch(attention_dkdv_kernel_impl<D>, kBlockThreads, dkdv_smem_floats<D>() * 4, grid_for(n, bh_count), params);
    launch(attention_dq_kernel_impl<D>, kBlockThreads, dq_smem_floats<D>() * 4, grid_for(n, bh_count), params);
  });
}

const bool registered = [] {
  attention_forward_kernel.cuda = &attention_forward_cuda;
  attention_backward_kernel.cuda = &attention_backward_cuda;
  return true;
}();

}  // namespace

}  // namespace engine

// Tensor-core versions of the attention kernels (bf16 operands, float32
// accumulation), run instead of attention.cu's FMA kernels in bf16 mode
// (gemm_precision() == BFloat16). Same contracts (attention_kernels.h), same
// parameters (attention_cuda.cuh: strided HeadsView operands, key mask, lse),
// same outputs in float32; head_dim 32 or 64 (attention.cu keeps the FMA
// kernels for anything else).
//
// Precision: q, k, v and dout are read as float32 and rounded to bf16 (round
// to nearest even) on their way into shared memory; so are the probabilities
// P and dS before they multiply V, dO, K or Q. Every product is accumulated in
// float32 by the tensor cores; softmax statistics, lse, delta and all outputs
// stay float32.
//
// The instruction: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32,
// D[16 x 8] += A[16 x 16] B[16 x 8], per warp. With g = lane / 4 and
// t = lane % 4, a lane holds (PTX ISA, "matrix fragments for mma.m16n8k16"):
//   A  4 registers of 2 bf16: a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, 2t+1],
//      a[2] = A[g][2t+8, 2t+9], a[3] = A[g+8][2t+8, 2t+9];
//   B  2 registers: b[0] = B[2t, 2t+1][g], b[1] = B[2t+8, 2t+9][g];
//   C  4 floats: c[0], c[1] = C[g][2t, 2t+1], c[2], c[3] = C[g+8][2t, 2t+1].
// Fragments come from shared memory through ldmatrix (m8n8.x4.b16): lane l
// gives the address of row l % 8 of matrix l / 8, and register i receives
// matrix i's row g, elements 2t and 2t+1 (with .trans: its column g, rows
// 2t and 2t+1). Every tile in shared memory keeps its natural layout, rows of
// d bf16 ([token][d]), so:
//   * a row slab as A (Q, dO, K, V: 16 rows x 16 of d): ldmatrix.x4 of
//     (rows 0-7 | 8-15) x (d 0-7 | 8-15), in the order of a[0..3];
//   * "K-like" B = X^T (k = d, n = 8 rows of X; S = Q K^T, dP = dO V^T):
//     ldmatrix.x4 of 8 rows x 32 of d gives b[0], b[1] of two k-steps;
//   * "V-like" B = X (k = 16 rows of X, n = 8 of d; P V, P^T dO, dS K,
//     dS^T Q): ldmatrix.x4.trans of (rows 0-7 | 8-15) x (two 8-wide d
//     blocks) gives b[0], b[1] of two n-tiles.
// And the C fragment of a score tile S (n-tiles 2kk and 2kk+1) is already
// the A fragment of P for k-step kk once packed to bf16 (to_a below): P stays
// in registers, FlashAttention-2 style.
// Shared rows are padded to d + 8 bf16 (144 or 80 bytes): the 8 row
// addresses of every ldmatrix matrix then fall in 8 distinct 16-byte bank
// groups (no conflicts).
//
// Blocks have 8 warps; each warp owns 16 rows (queries, or keys in the
// dK/dV pass) of the block's 128, and the block streams 64-row tiles of the
// other operand through shared memory:
//   forward   per (batch x head, 128 queries): S = Q K^T (Q's A fragments
//             stay in registers), online softmax on the C fragments (a row's
//             values live in the 4 lanes of a quad: two xor-shuffles), then
//             O += P V. O, the row max and sum stay in registers.
//   dK/dV     per (batch x head, 128 keys), looping over query tiles, 16
//             queries at a time: S^T = K Q^T, P^T = exp2(S^T - lse),
//             dP^T = V dO^T, dS^T = P^T (dP^T - delta); dV += P^T dO,
//             dK += dS^T Q. K's and V's A fragments stay in registers.
//   dQ        per (batch x head, 128 queries), looping over key tiles, 16
//             keys at a time: S, P, dP = dO V^T, dS as above, dQ += dS K.
// Why 128 rows: every block streams all of its head's other operand (from
// L2, float32), so rows per block divide that traffic, which at ViT sizes
// costs about as much as the mma work; and for N = 197 two blocks of 8 warps
// leave the same 3 of 16 warps idle as four of 4. The registers
// (ptxas, CUDA 13, sm_90a, head_dim 64: forward 188, dK/dV 226, dQ 183, no
// spills) allow one block, 8 warps, per SM; shared memory is 55 KB (forward)
// and 73 KB (backward).
// dQ is its own pass (S and dP computed twice) so that nothing is
// accumulated with atomics: gradients are bit-reproducible.
//
// Loads: the operands are float32 in global memory and bf16 in shared
// memory, so they go through registers (cp.async cannot convert): the next
// tile's float4 loads are issued at the top of a tile, stay in flight during
// its mma work, and are rounded and stored (8 bytes per 4 values) after the
// barrier that ends it, into the other of two shared buffers (StreamBuffer):
// the latency hiding of a cp.async double buffer, one barrier per tile, for
// 16 registers per streamed tile. (A later bf16-activation input would cp.async straight into the
// tiles: TileLoad is the one place to change.) Rows past N are zeros, and
// their keys get a -inf bias, so partial tiles add exact zeros; warps whose
// 16 rows all lie past N skip the mma work but keep to the barriers, and the
// last partial tile skips the 8-key n-tiles and 16-key chunks past its end.
#include <cuda_runtime.h>
#ifdef __CUDACC__
#include <cuda_bf16.h>
#endif

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/attention/attention_cuda.cuh"

namespace engine {
namespace attention_cuda {

namespace {

// Warps per block: 8 (the design, see the top of the file); 4 also works
// (64 rows per block, more registers per thread for the streamed loads, two
// blocks per SM), for measuring the other side of that trade-off:
// -DENGINE_ATTENTION_MMA_WARPS=4.
#ifndef ENGINE_ATTENTION_MMA_WARPS
#define ENGINE_ATTENTION_MMA_WARPS 8
#endif
constexpr int kWarps = ENGINE_ATTENTION_MMA_WARPS;
static_assert(kWarps == 4 || kWarps == 8, "4 or 8 warps of 16 rows");
constexpr int kThreads = 32 * kWarps;
constexpr int kBlocksPerSm = 8 / kWarps;  // 8 warps per SM either way (registers: ptxas fits 255 / 2 blocks of 4)
constexpr int kRows = 16 * kWarps;  // a block's own rows (queries, or keys in the dK/dV pass): 128
// (The streamed tiles of the other operand have kTile = 64 rows.)

// Row stride (in bf16) of a [rows, D] tile in shared memory, and the bytes of one.
template <int D>
constexpr int ld() {
  return D + 8;
}
template <int D>
constexpr int tile_bytes(int rows) {
  return rows * ld<D>() * 2;
}

// ------------------------------------------------------------------ bf16 and the warp-level instructions

#if !(defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
// bf16 bits of x, rounded to nearest even (finite x; the kernels see no NaN):
// what cvt.rn.bf16x2.f32 does, for host passes (and the emulation harness).
inline uint32_t bf16_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
#endif

// Two floats as two bf16 in one register: lo in the low half (the lower
// column or row index of a fragment), hi in the high half.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x = lo (low 16 bits), .y = hi
  uint32_t bits;
  memcpy(&bits, &v, 4);
  return bits;
#else
  return bf16_bits(lo) | (bf16_bits(hi) << 16);
#endif
}

// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: see the top of the file.
// kTransposed picks .trans (each 8x8 matrix transposed on the way in).
template <bool kTransposed>
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const uint16_t* row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if constexpr (kTransposed) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // bf16 mma and ldmatrix need sm_80 (the Makefile builds sm_90a and compute_80)
#endif
}

// c += a b, one m16n8k16 bf16 product with float32 accumulation.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#elif defined(__CUDA_ARCH__)
  __trap();  // bf16 mma and ldmatrix need sm_80 (the Makefile builds sm_90a and compute_80)
#endif
}

// ------------------------------------------------------------------ fragments

// The lane's place in fragments: g = lane / 4 (row of a C fragment), t =
// lane % 4 (column pair), and the row / column this lane addresses in an
// ldmatrix.x4 (matrix m = lane / 8, its row lane % 8).
struct Lane {
  int g, t, ld_row, ld_mat;
  __device__ Lane() {
    const int lane = static_cast<int>(threadIdx.x) % 32;
    g = lane / 4;
    t = lane % 4;
    ld_row = lane % 8;
    ld_mat = lane / 8;
  }
};

// A fragments of the 16 rows at `rows` (a [16, D] slab of a shared tile), one per k-step of 16 d.
template <int D>
__device__ __forceinline__ void load_a(uint32_t (&a)[D / 16][4], const uint16_t* rows, const Lane& l) {
  // matrices: rows 0-7 / 8-15 (ld_mat % 2), d 0-7 / 8-15 (ld_mat / 2)
  const uint16_t* p = rows + (8 * (l.ld_mat % 2) + l.ld_row) * ld<D>() + 8 * (l.ld_mat / 2);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) ldsm_x4<false>(a[kk], p + 16 * kk);
}

// c += A X^T for the 8 rows of X at `rows` (the "K-like" B: k = d).
template <int D>
__device__ __forceinline__ void mma_rows_t(float (&c)[4], const uint32_t (&a)[D / 16][4], const uint16_t* rows,
                                           const Lane& l) {
  const uint16_t* p = rows + l.ld_row * ld<D>() + 8 * l.ld_mat;  // matrices: d blocks 0-7, 8-15, 16-23, 24-31
#pragma unroll
  for (int k2 = 0; k2 < D / 32; ++k2) {
    uint32_t b[4];
    ldsm_x4<false>(b, p + 32 * k2);
    mma_bf16(c, a[2 * k2], b[0], b[1]);
    mma_bf16(c, a[2 * k2 + 1], b[2], b[3]);
  }
}

// acc[j] += A X for the 16 rows of X at `rows` (the "V-like" B: k = rows,
// n-tile j = d 8j ... 8j + 7), A one k-step of P or dS.
template <int D>
__device__ __forceinline__ void mma_rows(float (&acc)[D / 8][4], const uint32_t (&a)[4], const uint16_t* rows,
                                         const Lane& l) {
  // matrices: rows 0-7 / 8-15 (ld_mat % 2), d block 2 j2 / 2 j2 + 1 (ld_mat / 2)
  const uint16_t* p = rows + (8 * (l.ld_mat % 2) + l.ld_row) * ld<D>() + 8 * (l.ld_mat / 2);
#pragma unroll
  for (int j2 = 0; j2 < D / 16; ++j2) {
    uint32_t b[4];
    ldsm_x4<true>(b, p + 16 * j2);
    mma_bf16(acc[2 * j2], a, b[0], b[1]);
    mma_bf16(acc[2 * j2 + 1], a, b[2], b[3]);
  }
}

// The A fragment (bf16) of k-step kk from the C fragments s[2 kk], s[2 kk + 1].
__device__ __forceinline__ void to_a(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}

template <int N>
__device__ __forceinline__ void zero(float (&c)[N][4]) {
#pragma unroll
  for (int j = 0; j < N; ++j) c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.0f;
}

// Max and sum over the 4 lanes of a quad (the owners of one C-fragment row).
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// ------------------------------------------------------------------ tiles

// Four bf16 as one 8-byte shared store.
struct alignas(8) Bf16x4 {
  uint32_t lo, hi;
};

// One float32 operand of one (batch x head) in global memory: an [n, D]
// matrix, row i at data + i * stride. The stride refers to the view's token
// stride (a kernel parameter), read where a tile's loads are issued, as the
// kernels always did: a copy taken at the top of the (batch x head) changes
// how the address arithmetic folds, and ptxas's registers with it.
struct Operand {
  const float* data;
  const int64_t& stride;
};
__device__ __forceinline__ Operand head_operand(const HeadsView<const float>& view, int64_t bh, int heads) {
  return {head_rows(view, bh, heads), view.token};
}

// One thread's share of a [Rows, D] float32 tile (rows row0 ... row0 + Rows - 1
// of an operand): thread x takes float4 column x % (D / 4) of rows
// x / (D / 4) + k step. load() issues the global loads (zeros past row n);
// store() rounds them to bf16 into a shared tile.
template <int D, int Rows>
struct TileLoad {
  static constexpr int kChunks = D / 4, kStep = kThreads / kChunks, kCount = Rows / kStep;
  static_assert(kThreads % kChunks == 0 && Rows % kStep == 0, "whole float4s per thread");
  float4 v[kCount];

  __device__ __forceinline__ void load(const Operand& src, int row0, int n) {
    const int r = static_cast<int>(threadIdx.x) / kChunks, c4 = static_cast<int>(threadIdx.x) % kChunks * 4;
    const float* from = src.data + (row0 + r) * src.stride + c4;
#pragma unroll
    for (int k = 0; k < kCount; ++k, from += kStep * src.stride) {
      v[k] = row0 + r + k * kStep < n ? *reinterpret_cast<const float4*>(from) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
  __device__ __forceinline__ void store(uint16_t* tile) const {
    const int r = static_cast<int>(threadIdx.x) / kChunks, c4 = static_cast<int>(threadIdx.x) % kChunks * 4;
#pragma unroll
    for (int k = 0; k < kCount; ++k) {
      const Bf16x4 packed{pack_bf16(v[k].x, v[k].y), pack_bf16(v[k].z, v[k].w)};
      *reinterpret_cast<Bf16x4*>(tile + (r + k * kStep) * ld<D>() + c4) = packed;
    }
  }
};

// The rows of the thread's C fragments (rows g and g + 8 of the warp's 16 at
// row0 + 16 warp), times factor[0] / factor[1], into an [n, D] float32 matrix.
template <int D>
__device__ __forceinline__ void store_c_rows(float* dst, int64_t row_stride, int row0, int n, const Lane& l,
                                             const float (&acc)[D / 8][4], const float (&factor)[2]) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row0 + 16 * (static_cast<int>(threadIdx.x) / 32) + l.g + 8 * half;
    if (row >= n) continue;
    float* to = dst + row * row_stride + 2 * l.t;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      *reinterpret_cast<float2*>(to + 8 * j) =
          make_float2(acc[j][2 * half] * factor[half], acc[j][2 * half + 1] * factor[half]);
    }
  }
}

// One of the two buffers that the streamed tiles alternate between (tile t
// in buffer t % 2): two [64, D] bf16 tiles (K and V, Q and dO) and two
// 64-float vectors (key bias; lse and delta). While the warps work on one,
// the next tile's loads are stored into the other as soon as a warp is done,
// with one barrier per tile.
template <int D>
struct StreamBuffer {
  uint16_t *a, *b;
  float *u, *w;
  static constexpr int bytes() { return 2 * tile_bytes<D>(kTile) + 2 * kTile * 4; }
  __device__ StreamBuffer(void* base, int tile) {
    char* p = static_cast<char*>(base) + (tile % 2) * bytes();
    a = reinterpret_cast<uint16_t*>(p);
    b = a + kTile * ld<D>();
    u = reinterpret_cast<float*>(b + kTile * ld<D>());
    w = u + kTile;
  }
};

// ------------------------------------------------------------------ staging

// The per-row values that a pass streams with its two tiles, for the
// StreamBuffer's u (and w when kHasW), of row `row` (row0 + threadIdx.x,
// unsigned as in the index arithmetic) of n; rows past n get the values that
// zero their terms.
struct KeyValues {  // forward and dQ: u = the key's bias
  const float* active;
  static constexpr bool kHasW = false;
  __device__ __forceinline__ float u(unsigned key, int n) const { return key_bias(active, key, n); }
};
struct QueryValues {  // dK/dV: u = the query's lse (log2), w = its delta
  const float *lse, *delta;
  static constexpr bool kHasW = true;
  __device__ __forceinline__ float u(unsigned query, int n) const { return lse_log2(lse, query, n); }
  __device__ __forceinline__ float w(unsigned query, int n) const {
    return static_cast<int>(query) < n ? delta[query] : 0.0f;
  }
};

// What a pass streams through the StreamBuffers: the tiles of a and b (K and
// V, or Q and dO) and the rows' values.
template <class Values>
struct Stream {
  Operand a, b;
  Values values;
};

// One thread's share of a streamed 64-row tile on its way into a
// StreamBuffer: the float4 loads of the a and b tiles and, for threads
// x < kTile, row x's u and w. load() issues them at the top of a tile (in
// flight during its mma work), store() rounds and stores them after the
// barrier that ends it.
template <int D, class Values>
struct StreamStage {
  TileLoad<D, kTile> a, b;
  float u, w;

  __device__ __forceinline__ void load_tiles(const Stream<Values>& from, int row0, int n) {
    a.load(from.a, row0, n);
    b.load(from.b, row0, n);
  }
  // The tile at row0 if there is one (more). u and w restart at 0 every tile
  // either way: fresh values, which ptxas does not keep alive from tile to
  // tile (loaded only when there is a next tile, they would be).
  __device__ __forceinline__ void load(bool more, const Stream<Values>& from, int row0, int n) {
    u = w = 0.0f;
    if (!more) return;
    load_tiles(from, row0, n);
    if (threadIdx.x < kTile) {
      u = from.values.u(row0 + threadIdx.x, n);
      if constexpr (Values::kHasW) w = from.values.w(row0 + threadIdx.x, n);
    }
  }
  __device__ __forceinline__ void store_tiles(const StreamBuffer<D>& to) const {
    a.store(to.a);
    b.store(to.b);
  }
  __device__ __forceinline__ void store(const StreamBuffer<D>& to) const {
    store_tiles(to);
    if (threadIdx.x < kTile) {
      to.u[threadIdx.x] = u;
      if constexpr (Values::kHasW) to.w[threadIdx.x] = w;
    }
  }
};

// The start of a (batch x head): the block's own rows row0 ... row0 + kRows - 1
// of kOwn operands (*own[i] into the i-th of the [kRows, D] tiles that follow
// each other at own_tiles) and the stream's first tile (into buffer 0),
// stored between two barriers: after every warp is done with the previous
// (batch x head)'s tiles, before any warp reads these. The tiles' loads are
// issued before the first barrier; the first tile's values are read after
// it, straight into the buffer. `first` is the stage that then carries the
// stream's later tiles: one set of registers for all of them (a stage of its
// own for the first tile costs the dQ kernel 17 more registers, D = 64).
template <int D, int kOwn, class Values>
__device__ __forceinline__ void stage_head_start(const HeadsView<const float>* const (&own)[kOwn], int64_t bh,
                                                 int heads, int row0, uint16_t* own_tiles,
                                                 const Stream<Values>& stream, StreamStage<D, Values>& first,
                                                 void* buffers, int n) {
  TileLoad<D, kRows> tiles[kOwn];
#pragma unroll
  for (int i = 0; i < kOwn; ++i) tiles[i].load(head_operand(*own[i], bh, heads), row0, n);
  first.load_tiles(stream, 0, n);
  const StreamBuffer<D> buffer(buffers, 0);
  __syncthreads();  // the previous (batch x head) is done with the tiles
#pragma unroll
  for (int i = 0; i < kOwn; ++i) tiles[i].store(own_tiles + i * kRows * ld<D>());
  first.store_tiles(buffer);
  if (threadIdx.x < kTile) {
    buffer.u[threadIdx.x] = stream.values.u(threadIdx.x, n);
    if constexpr (Values::kHasW) buffer.w[threadIdx.x] = stream.values.w(threadIdx.x, n);
  }
  __syncthreads();
}

// ------------------------------------------------------------------ forward

template <int D>
constexpr int forward_smem_bytes() {
  return tile_bytes<D>(kRows) + 2 * StreamBuffer<D>::bytes();  // Q; two of (K, V, key bias)
}

// Online softmax over one 64-key tile of scores s (C fragments, log2 domain,
// bias added) for the lane's rows g (half 0) and g + 8 (half 1): updates the
// running max m and the lane's share of the sum l, rescales o, and turns s
// into the probabilities.
template <int D>
__device__ __forceinline__ void online_softmax(float (&s)[8][4], float (&m)[2], float (&l)[2], float (&o)[D / 8][4]) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < 8; ++j) tile_max = fmaxf(tile_max, fmaxf(s[j][2 * half], s[j][2 * half + 1]));
    const float m_new = fmaxf(m[half], quad_max(tile_max));
    const float m_ref = softmax_reference(m_new);
    const float alpha = exp2f(m[half] - m_ref);  // 0 on the first live tile
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      s[j][2 * half] = exp2f(s[j][2 * half] - m_ref);
      s[j][2 * half + 1] = exp2f(s[j][2 * half + 1] - m_ref);
      sum += s[j][2 * half] + s[j][2 * half + 1];
    }
    l[half] = l[half] * alpha + sum;
    m[half] = m_new;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      o[j][2 * half] *= alpha;
      o[j][2 * half + 1] *= alpha;
    }
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm) attention_forward_mma_kernel(ForwardParams p) {
  extern __shared__ float4 shared_mem[];
  uint16_t* Qs = reinterpret_cast<uint16_t*>(shared_mem);
  void* buffers = Qs + kRows * ld<D>();  // two StreamBuffers: a = K, b = V, u = key bias
  const Lane l;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int n = p.n, row0 = static_cast<int>(blockIdx.x) * kRows, tiles = (n + kTile - 1) / kTile;
  const bool live = row0 + 16 * warp < n;  // warp-uniform: does the warp own any row below n?

  for (int64_t bh = blockIdx.y; bh < p.bh_count; bh += gridDim.y) {
    const Stream<KeyValues> stream{head_operand(p.k, bh, p.heads), head_operand(p.v, bh, p.heads),
                                   {p.active ? p.active + (bh / p.heads) * n : nullptr}};
    StreamStage<D, KeyValues> next;
    stage_head_start<D>({&p.q}, bh, p.heads, row0, Qs, stream, next, buffers, n);
    uint32_t qa[D / 16][4];
    if (live) load_a<D>(qa, Qs + 16 * warp * ld<D>(), l);

    float m[2] = {-INFINITY, -INFINITY}, lsum[2] = {0.0f, 0.0f}, o[D / 8][4];
    zero(o);
    for (int tile = 0; tile < tiles; ++tile) {
      const int key0 = tile * kTile, keys = min(kTile, n - key0);
      const bool more = tile + 1 < tiles;
      next.load(more, stream, key0 + kTile, n);  // the next tile: in flight during this one's mma work
      const StreamBuffer<D> cur(buffers, tile);
      const uint16_t *Ks = cur.a, *Vs = cur.b;
      const float* bias = cur.u;
      if (live) {
        float s[8][4];
        zero(s);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (8 * j < keys) mma_rows_t<D>(s[j], qa, Ks + 8 * j * ld<D>(), l);
#pragma unroll
          for (int e = 0; e < 4; ++e) s[j][e] = fmaf(s[j][e], p.scale_log2, bias[8 * j + 2 * l.t + (e & 1)]);
        }
        online_softmax<D>(s, m, lsum, o);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          if (16 * kk >= keys) break;
          uint32_t pa[4];
          to_a(pa, s[2 * kk], s[2 * kk + 1]);
          mma_rows<D>(o, pa, Vs + 16 * kk * ld<D>(), l);
        }
      }
      if (more) {  // into the other buffer, last read by tile - 1 (before the barrier that ended it)
        next.store(StreamBuffer<D>(buffers, tile + 1));
        __syncthreads();  // the next K, V and bias are in place, and every warp is done with this tile
      }
    }

    float inv[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float total = quad_sum(lsum[half]);
      inv[half] = total > 0.0f ? 1.0f / total : 0.0f;  // a row without active keys gives zeros
      const int row = row0 + 16 * warp + l.g + 8 * half;
      if (l.t == 0 && row < n) p.lse[bh * n + row] = total > 0.0f ? (m[half] + log2f(total)) * kLn2 : -INFINITY;
    }
    store_c_rows<D>(head_rows(p.out, bh, p.heads), p.out.token, row0, n, l, o, inv);
  }
}

// ------------------------------------------------------------------ backward

// P and dS for one 16-wide chunk of a score tile, in C fragments s[0..1]
// (columns 8 j ... 8 j + 7 of the chunk's two n-tiles) with dp[0..1] the
// matching dP: p = exp2(s * scale_log2 + row_bias - col_lse) and
// ds = p (dp - delta). Row and column terms come per lane: rows g, g + 8
// (row_*[half]) and columns 2t, 2t + 1 of each n-tile (col_*[j][e & 1]).
struct ChunkTerms {
  float row_bias[2], row_lse[2], row_delta[2];  // per half
  float col_bias[2][2], col_lse[2][2], col_delta[2][2];  // per n-tile, column
};
__device__ __forceinline__ void probabilities(float (&s)[2][4], float (&dp)[2][4], const ChunkTerms& c,
                                              float scale_log2) {
#pragma unroll
  for (int j = 0; j < 2; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int half = e / 2, col = e & 1;
      const float pe = exp2f(fmaf(s[j][e], scale_log2, c.row_bias[half] + c.col_bias[j][col]) - c.row_lse[half] -
                             c.col_lse[j][col]);
      s[j][e] = pe;
      dp[j][e] = pe * (dp[j][e] - c.row_delta[half] - c.col_delta[j][col]);
    }
  }
}

template <int D>
constexpr int backward_smem_bytes() {
  return 2 * tile_bytes<D>(kRows) + 2 * StreamBuffer<D>::bytes();  // the own rows' two tiles; two stream buffers
}

// dK and dV for 128 keys (warp: 16 keys), looping over the query tiles.
template <int D>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm) attention_dkdv_mma_kernel(BackwardParams p) {
  extern __shared__ float4 shared_mem[];
  uint16_t* Ks = reinterpret_cast<uint16_t*>(shared_mem);
  uint16_t* Vs = Ks + kRows * ld<D>();
  void* buffers = Vs + kRows * ld<D>();  // two StreamBuffers: a = Q, b = dO, u = lse (log2), w = delta
  const Lane l;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int n = p.n, key0 = static_cast<int>(blockIdx.x) * kRows, tiles = (n + kTile - 1) / kTile;
  const bool live = key0 + 16 * warp < n;

  for (int64_t bh = blockIdx.y; bh < p.bh_count; bh += gridDim.y) {
    const Stream<QueryValues> stream{head_operand(p.q, bh, p.heads), head_operand(p.dout, bh, p.heads),
                                     {p.lse + bh * n, p.delta + bh * n}};
    const float* active = p.active ? p.active + (bh / p.heads) * n : nullptr;
    StreamStage<D, QueryValues> next;
    stage_head_start<D>({&p.k, &p.v}, bh, p.heads, key0, Ks, stream, next, buffers, n);
    uint32_t ka[D / 16][4], va[D / 16][4];
    ChunkTerms terms;  // rows are keys: their bias; columns are queries: lse and delta
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      terms.row_bias[half] = key_bias(active, key0 + 16 * warp + l.g + 8 * half, n);
      terms.row_lse[half] = terms.row_delta[half] = 0.0f;
    }
    if (live) {
      load_a<D>(ka, Ks + 16 * warp * ld<D>(), l);
      load_a<D>(va, Vs + 16 * warp * ld<D>(), l);
    }
    float dk[D / 8][4], dv[D / 8][4];
    zero(dk);
    zero(dv);

    for (int tile = 0; tile < tiles; ++tile) {
      const int query0 = tile * kTile, queries = min(kTile, n - query0);
      const bool more = tile + 1 < tiles;
      next.load(more, stream, query0 + kTile, n);  // the next tile: in flight during this one's mma work
      const StreamBuffer<D> cur(buffers, tile);
      const uint16_t *Qs = cur.a, *dOs = cur.b;
      const float *lse_s = cur.u, *delta_s = cur.w;
      if (live) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {  // 16 queries at a time
          if (16 * c >= queries) break;
          float s[2][4], dp[2][4];
          zero(s);
          zero(dp);
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            const int col0 = 16 * c + 8 * j;
            mma_rows_t<D>(s[j], ka, Qs + col0 * ld<D>(), l);    // S^T = K Q^T
            mma_rows_t<D>(dp[j], va, dOs + col0 * ld<D>(), l);  // dP^T = V dO^T
#pragma unroll
            for (int col = 0; col < 2; ++col) {
              terms.col_bias[j][col] = 0.0f;
              terms.col_lse[j][col] = lse_s[col0 + 2 * l.t + col];
              terms.col_delta[j][col] = delta_s[col0 + 2 * l.t + col];
            }
          }
          probabilities(s, dp, terms, p.scale_log2);  // P^T, dS^T
          uint32_t pa[4], dsa[4];
          to_a(pa, s[0], s[1]);
          to_a(dsa, dp[0], dp[1]);
          mma_rows<D>(dv, pa, dOs + 16 * c * ld<D>(), l);  // dV += P^T dO
          mma_rows<D>(dk, dsa, Qs + 16 * c * ld<D>(), l);  // dK += dS^T Q (times scale at the end)
        }
      }
      if (more) {  // into the other buffer, last read by tile - 1
        next.store(StreamBuffer<D>(buffers, tile + 1));
        __syncthreads();  // the next tile is in place, and every warp is done with this one
      }
    }

    const float ones[2] = {1.0f, 1.0f}, scales[2] = {p.scale, p.scale};
    store_c_rows<D>(head_rows(p.dk, bh, p.heads), p.dk.token, key0, n, l, dk, scales);
    store_c_rows<D>(head_rows(p.dv, bh, p.heads), p.dv.token, key0, n, l, dv, ones);
  }
}

// dQ for 128 queries (warp: 16 queries), looping over the key tiles.
template <int D>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm) attention_dq_mma_kernel(BackwardParams p) {
  extern __shared__ float4 shared_mem[];
  uint16_t* Qs = reinterpret_cast<uint16_t*>(shared_mem);
  uint16_t* dOs = Qs + kRows * ld<D>();
  void* buffers = dOs + kRows * ld<D>();  // two StreamBuffers: a = K, b = V, u = key bias
  const Lane l;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int n = p.n, row0 = static_cast<int>(blockIdx.x) * kRows, tiles = (n + kTile - 1) / kTile;
  const bool live = row0 + 16 * warp < n;

  for (int64_t bh = blockIdx.y; bh < p.bh_count; bh += gridDim.y) {
    const Stream<KeyValues> stream{head_operand(p.k, bh, p.heads), head_operand(p.v, bh, p.heads),
                                   {p.active ? p.active + (bh / p.heads) * n : nullptr}};
    StreamStage<D, KeyValues> next;
    stage_head_start<D>({&p.q, &p.dout}, bh, p.heads, row0, Qs, stream, next, buffers, n);
    uint32_t qa[D / 16][4], doa[D / 16][4];
    ChunkTerms terms;  // rows are queries: lse and delta; columns are keys: their bias
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = row0 + 16 * warp + l.g + 8 * half;
      terms.row_bias[half] = 0.0f;
      terms.row_lse[half] = lse_log2(p.lse + bh * n, row, n);
      terms.row_delta[half] = row < n ? p.delta[bh * n + row] : 0.0f;
    }
    if (live) {
      load_a<D>(qa, Qs + 16 * warp * ld<D>(), l);
      load_a<D>(doa, dOs + 16 * warp * ld<D>(), l);
    }
    float dq[D / 8][4];
    zero(dq);

    for (int tile = 0; tile < tiles; ++tile) {
      const int key0 = tile * kTile, keys = min(kTile, n - key0);
      const bool more = tile + 1 < tiles;
      next.load(more, stream, key0 + kTile, n);  // the next tile: in flight during this one's mma work
      const StreamBuffer<D> cur(buffers, tile);
      const uint16_t *Ks = cur.a, *Vs = cur.b;
      const float* bias_s = cur.u;
      if (live) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {  // 16 keys at a time
          if (16 * c >= keys) break;
          float s[2][4], dp[2][4];
          zero(s);
          zero(dp);
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            const int col0 = 16 * c + 8 * j;
            mma_rows_t<D>(s[j], qa, Ks + col0 * ld<D>(), l);    // S = Q K^T
            mma_rows_t<D>(dp[j], doa, Vs + col0 * ld<D>(), l);  // dP = dO V^T
#pragma unroll
            for (int col = 0; col < 2; ++col) {
              terms.col_bias[j][col] = bias_s[col0 + 2 * l.t + col];
              terms.col_lse[j][col] = terms.col_delta[j][col] = 0.0f;
            }
          }
          probabilities(s, dp, terms, p.scale_log2);  // P, dS
          uint32_t dsa[4];
          to_a(dsa, dp[0], dp[1]);
          mma_rows<D>(dq, dsa, Ks + 16 * c * ld<D>(), l);  // dQ += dS K (times scale at the end)
        }
      }
      if (more) {  // into the other buffer, last read by tile - 1
        next.store(StreamBuffer<D>(buffers, tile + 1));
        __syncthreads();  // the next tile is in place, and every warp is done with this one
      }
    }

    const float scales[2] = {p.scale, p.scale};
    store_c_rows<D>(head_rows(p.dq, bh, p.heads), p.dq.token, row0, n, l, dq, scales);
  }
}

template <typename Body>
void with_mma_head_dim(int64_t d, const Body& body) {
  if (d == 32) return body(std::integral_constant<int, 32>{});
  if (d == 64) return body(std::integral_constant<int, 64>{});
  fail("fused_attention (cuda, bf16): head_dim {} has no tensor-core kernel (32 or 64)", d);
}

}  // namespace

bool mma_head_dim(int64_t head_dim) { return head_dim == 32 || head_dim == 64; }

void forward_mma(const ForwardParams& params, int64_t head_dim) {
  with_mma_head_dim(head_dim, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    launch(attention_forward_mma_kernel<D>, kThreads, forward_smem_bytes<D>(),
           grid_for(params.n, params.bh_count, kRows), params);
  });
}

void backward_mma(const BackwardParams& params, int64_t head_dim) {
  with_mma_head_dim(head_dim, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    const dim3 grid = grid_for(params.n, params.bh_count, kRows);
    launch(attention_dkdv_mma_kernel<D>, kThreads, backward_smem_bytes<D>(), grid, params);
    launch(attention_dq_mma_kernel<D>, kThreads, backward_smem_bytes<D>(), grid, params);
  });
}

}  // namespace attention_cuda
}  // namespace engine

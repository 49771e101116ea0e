// CUDA kernels of the selective scan (Mamba's S6): the contracts are in
// selective_scan_kernels.h and the reference semantics in
// selective_scan_cpu.cpp, whose sums these kernels compute (the reductions
// over channels and batch in another fixed order), so the two devices agree
// to rounding. Tensors arrive contiguous, [batch, length, channels]; element
// (n, t, c) is at (n * length + t) * channels + c (Bm and Cm may be rows of a
// wider tensor).
//
// A channel's states go in groups of 16 (one pass per group when S is
// larger), each group split over two neighbouring lanes of 8 states. The
// forward's block (64 channels of one batch row) stages each tile's x, dt, Bm
// and Cm rows in shared memory (vector loads) and writes y as vectors from the
// lanes' partial sums left there. Steps past the sequence are identity steps
// (x = dt = 0), so a tile's steps are one straight run of code.
// A forward whose backward will run also saves the state entering every tile
// (1/8 of the states); the backward (a lane: 4 states of 2 channels) replays
// each tile from it into a shared-memory window, walks each tile back with its
// x, dt, dy and rows in shared memory, and reduces dBm and dCm over the warp's
// 16 channels by shuffles, then over the block's 4 warps at the tile's end; no
// atomics anywhere, so the results are bit-reproducible.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/scan/selective_scan_kernels.h"
#include "engine/ops/scan/sequence_cuda.cuh"

namespace engine {

namespace {

using namespace sequence;  // the sequence ops' shared helpers

constexpr unsigned kFullMask = 0xffffffffu;

// Sums N values per lane over a group of N lanes kStride apart (N a power of
// 2) at once: afterwards the group's i-th lane holds the total of value i.
// Each round, lanes pair up across `half`; one keeps the upper half of its
// values, the other the lower half, and each adds what its partner sends of
// the half it keeps: N - 1 shuffles in all, where N separate group sums take
// N log2 N; the order is fixed.
template <int N, int kStride, typename T>
__device__ __forceinline__ T group_sum_transposed(T (&v)[N]) {
  const int lane = threadIdx.x / kStride % N;
#pragma unroll
  for (int half = N / 2; half > 0; half /= 2) {
    const bool upper = lane & half;
#pragma unroll
    for (int i = 0; i < half; ++i) {
      const T keep = upper ? v[i + half] : v[i];
      const T send = upper ? v[i] : v[i + half];
      v[i] = keep + __shfl_xor_sync(kFullMask, send, half * kStride);
    }
  }
  return v[0];
}

// exp(dt A) as the kernels compute it. float: the hardware's base-2
// exponential (one MUFU.EX2, relative error ~2^-22) of dt * (A log2 e), with
// A scaled once per thread; this instruction is the forward's critical
// resource. double: exp itself, as the CPU.
__device__ __forceinline__ float decay_exponent_scale(float a) { return a * 1.4426950408889634f; }
__device__ __forceinline__ double decay_exponent_scale(double a) { return a; }
// The inverse of decay_exponent_scale (x ln 2 for float).
__device__ __forceinline__ float decay_exponent_unscale(float a) { return a * 0.6931471805599453f; }
__device__ __forceinline__ double decay_exponent_unscale(double a) { return a; }
__device__ __forceinline__ float decay_of(float step, float scaled_a) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(step * scaled_a));
  return r;
}
__device__ __forceinline__ double decay_of(double step, double scaled_a) { return exp(step * scaled_a); }

// A thread keeps a group of kStateGroup states in registers; larger state
// sizes run one pass per group (the passes add into the outputs).
constexpr int kStateGroup = 16;

// Where a sequence keeps scan step k: first + k * stride (a negative stride
// for a reverse scan). The kernels walk addresses (one add per step) rather
// than recompute them from (n, t, c): index arithmetic was most of the
// forward's instructions. A row (channels or states) fits an int.
struct StepWalk {
  int64_t first;
  int stride;
  __device__ int64_t at(int64_t k) const { return first + k * stride; }
};

template <typename T>
struct SelectiveArgs {
  const T *x, *dt, *A, *Bm, *Cm, *D;
  int64_t batch, length, channels, state;
  int64_t row_stride;  // between the Bm (and Cm) rows of consecutive steps: S, or more in a wider tensor
  bool reverse;
  bool a_is_log;  // A holds A_log, and the scan's A is -exp of it (SelectiveScanInputs)
  int64_t group_begin = 0;  // this pass's states: [group_begin, group_begin + group_size())

  __device__ int group_size() const { return static_cast<int>(std::min<int64_t>(kStateGroup, state - group_begin)); }
  __device__ bool first_group() const { return group_begin == 0; }
  // Channel c of batch n in x, dt, y and their gradients, step by step.
  __device__ StepWalk channel_steps(int64_t n, int64_t c) const { return walk(n * length * channels + c, channels); }
  // Element s of this pass's group in the Bm and Cm rows of batch n, step by step.
  __device__ StepWalk state_steps(int64_t n, int s) const {
    return walk(n * length * row_stride + group_begin + s, row_stride);
  }
  __device__ StepWalk walk(int64_t base, int64_t row) const {
    return {base + (reverse ? (length - 1) * row : 0), static_cast<int>(reverse ? -row : row)};
  }
  // Element s of this pass's group in channel c's row of A.
  __device__ int64_t a_at(int64_t c, int s) const { return c * state + group_begin + s; }
};

template <typename T>
SelectiveArgs<T> selective_args(const SelectiveScanInputs& in, bool reverse) {
  return {data_or_null<const T>(in.x),  data_or_null<const T>(in.dt), data_or_null<const T>(in.A),
          data_or_null<const T>(in.Bm), data_or_null<const T>(in.Cm), data_or_null<const T>(in.D),
          in.x.shape()[0],              in.x.shape()[1],              in.x.shape()[2],
          in.A.shape()[1],              in.row_stride(),              reverse,
          in.a_is_log};
}

// N consecutive elements of a shared-memory row (16-byte aligned), read as
// vectors of 4.
template <typename T, int N>
__device__ __forceinline__ void load_row(const T* row, T (&out)[N]) {
  static_assert(N % 4 == 0, "rows are read 4 elements at a time");
#pragma unroll
  for (int i = 0; i < N; i += 4) {
    const Pack<T, 4> p = load_pack<T, 4>(row + i);
#pragma unroll
    for (int j = 0; j < 4; ++j) out[i + j] = p.v[j];
  }
}

// N elements to a 16-byte aligned row in memory, as vectors of 4.
template <typename T, int N>
__device__ __forceinline__ void store_row(const T (&in)[N], T* row) {
  static_assert(N % 4 == 0, "rows are written 4 elements at a time");
#pragma unroll
  for (int i = 0; i < N; i += 4) store_pack(row + i, Pack<T, 4>{{in[i], in[i + 1], in[i + 2], in[i + 3]}});
}

// One state's scan step, exp(dt A) h + dt x Bm, with input = dt x. The
// forward and the backward's replay both take it from here, so the replay
// reproduces the forward's states bit for bit.
template <typename T>
__device__ __forceinline__ T advanced_state(T h, T step, T scaled_a, T input, T b) {
  return decay_of(step, scaled_a) * h + input * b;
}

// One scan step for one channel over N of its states: h = exp(dt A) * h +
// dt x Bm, as SelectiveScanCpu::advance. b_row points at the first of the N
// states. There are no branches for the states past the group: their A and
// Bm entries are zero, so their h stays exactly zero; and the first step needs
// no special case, the state entering it being zero (decay * 0 = 0 for any
// finite decay, and exp(dt A) is finite for finite inputs with A <= 0).
template <typename T, int N>
__device__ __forceinline__ void selective_step(T (&h)[N], const T (&scaled_a)[N], const T* b_row, T step, T x) {
  const T input = step * x;
  T b[N];
  load_row(b_row, b);
#pragma unroll
  for (int s = 0; s < N; ++s) {
    h[s] = advanced_state(h[s], step, scaled_a[s], input, b[s]);
  }
}

// A = -exp(A_log), each type through its own exp.
__device__ __forceinline__ float a_of_log(float a_log) { return -expf(a_log); }
__device__ __forceinline__ double a_of_log(double a_log) { return -::exp(a_log); }

// A's row for channel c (-exp of the tensor's when it holds A_log), states
// first_state.. of this pass's group, scaled for decay_of.
template <typename T, int N>
__device__ __forceinline__ void load_scaled_a(const SelectiveArgs<T>& p, int64_t c, bool valid, int first_state,
                                              T (&scaled_a)[N]) {
#pragma unroll
  for (int s = 0; s < N; ++s) {
    const bool live = valid && first_state + s < p.group_size();
    const T stored = live ? p.A[p.a_at(c, first_state + s)] : T(0);
    scaled_a[s] = live ? decay_exponent_scale(p.a_is_log ? a_of_log(stored) : stored) : T(0);
  }
}

// The state entering every tile, saved by a forward whose backward will run,
// per lane of the forward (two per channel, 8 states each, the blocks' 64
// channels side by side): [state groups, tiles, B C 2 lanes, 8 states], a
// lane's 8 states contiguous (two 16-byte accesses). The backward, whose lanes
// split the states differently, reads them by channel (load_checkpoint).
constexpr int kLaneSplit = 2;                          // lanes per channel
constexpr int kLaneStates = kStateGroup / kLaneSplit;  // states per lane
constexpr int kLaneBlockChannels = 64;                 // channels per block (of 128 lanes)

int64_t checkpoint_elements(int64_t batch, int64_t length, int64_t channels, int64_t state) {
  const int64_t groups = (state + kStateGroup - 1) / kStateGroup, tiles = (length + kTile - 1) / kTile;
  return groups * tiles * batch * channels * kStateGroup;
}

// A thread's checkpoints, tile by tile: the one of the tile at k0 is at(k0),
// the block's address plus the thread's offset. (The tile stride, B C 16
// elements, is checked to fit an int on the host.) E: T for the forward,
// which writes them, const T for the backward.
template <typename E>
struct LaneCheckpoints {
  E* block_first;  // lane 0 of the block, first tile
  int tile_stride;
  // Lane 0 of the block in the tile at k0.
  __device__ E* tile(int k0) const { return block_first + static_cast<int64_t>(k0 / kTile) * tile_stride; }
  __device__ E* at(int k0) const { return tile(k0) + threadIdx.x * kLaneStates; }
};

// Those of the block of channels c0.. of batch n.
template <typename T, typename E>
__device__ LaneCheckpoints<E> lane_checkpoints(const SelectiveArgs<T>& p, E* saved, int64_t n, int64_t c0) {
  const int64_t lanes = p.batch * p.channels * kLaneSplit, tiles = (p.length + kTile - 1) / kTile;
  const int64_t block_lane = (n * p.channels + c0) * kLaneSplit;
  return {saved + ((p.group_begin / kStateGroup * tiles) * lanes + block_lane) * kLaneStates,
          static_cast<int>(lanes * kLaneStates)};
}

// The forward: a block takes kForwardChannels channels of one batch row and
// walks the sequence in tiles of kTile steps. Each tile's inputs are staged
// in shared memory by the whole block, and each thread has two roles:
//  - computing: thread i takes channel i / kForwardSplit and its
//    kForwardStates states of part i % kForwardSplit, and leaves its part of
//    every step's output (part 0 adds D x) in shared memory. Two lanes per
//    channel double the warps of one lane per channel (B x C threads leave
//    half of the GPU's warp slots idle at ViT-S sizes) and halve the
//    registers. (Measured on an H200, against 59 us at ViT-S sizes: two
//    channels per thread, sharing the Bm and Cm reads, 71 us; with four
//    lanes per channel, 73 us: both hide the exponentials' latency worse.)
//  - moving: thread i fetches, for one tile step, x and dt of a pack of
//    kForwardPack neighbouring channels (16-byte vectors when the channels
//    allow) and one element of the group's Bm and Cm rows; a tile later it
//    sums that pack's parts into y. So each input element is read once and
//    y written once, in vectors, and the computing role touches only shared
//    memory.
constexpr int kForwardSplit = kLaneSplit;
constexpr int kForwardStates = kLaneStates;
constexpr int kSelectiveForwardThreads = 128;
constexpr int kForwardChannels = kSelectiveForwardThreads / kForwardSplit;
constexpr int kForwardPack = kTile * kForwardChannels / kSelectiveForwardThreads;  // channels a thread moves
constexpr int kForwardPacksPerStep = kForwardChannels / kForwardPack;
static_assert(kForwardChannels % kForwardPack == 0, "packs tile a step's channels");
static_assert(kForwardChannels == kLaneBlockChannels, "the checkpoints' lanes");
static_assert(kTile * kStateGroup == kSelectiveForwardThreads, "one element of a tile's rows per thread");
static_assert(kForwardPack % 2 == 0 && kForwardPack * kForwardSplit % 4 == 0, "packs are moved as vectors");

// One tile's inputs in shared memory: x and dt side by side (one 8-byte read
// per step for the computing role), and the group's Bm and Cm rows.
template <typename T>
struct ForwardStage {
  alignas(4 * sizeof(T)) T xdt[kTile][kForwardChannels][2];
  alignas(4 * sizeof(T)) T b[kTile][kStateGroup];
  alignas(4 * sizeof(T)) T c[kTile][kStateGroup];
};

// The forward's shared memory: two tiles of inputs and two of outputs (each
// computing thread's part of each step's output), so one barrier per tile
// suffices (see selective_forward_kernel).
template <typename T>
struct ForwardShared {
  ForwardStage<T> stage[2];
  alignas(4 * sizeof(T)) T parts[2][kTile][kSelectiveForwardThreads];  // [tile step][computing thread]
};

// The moving role's fixed share of every tile, as 32-bit element offsets from
// the batch row's first element (L C and L times the row stride of Bm fit an
// int, checked on the host): scan step k of its pack is at seq + k *
// seq_stride, of its row element at row + k * row_stride (negative strides
// for a reverse scan).
template <typename T>
struct ForwardIo {
  const T *x, *dt, *Bm, *Cm;
  T* y;
  int length;
  int seq, seq_stride, row, row_stride;
  int step;           // the tile step of its pack and row element
  int pack;           // its pack's first channel, within the block
  int live_channels;  // how many of the pack's channels exist (0 past the channels)
  bool row_live;      // its row element is in the group
};

template <typename T>
__device__ ForwardIo<T> forward_io(const SelectiveArgs<T>& p, T* y, int64_t n, int64_t c0) {
  const int L = static_cast<int>(p.length), C = static_cast<int>(p.channels), R = static_cast<int>(p.row_stride);
  ForwardIo<T> io;
  io.x = p.x + n * L * C;
  io.dt = p.dt + n * L * C;
  io.y = y + n * L * C;
  io.Bm = p.Bm + n * L * R;
  io.Cm = p.Cm + n * L * R;
  io.length = L;
  io.step = threadIdx.x / kForwardPacksPerStep;
  io.pack = threadIdx.x % kForwardPacksPerStep * kForwardPack;
  const int first_channel = static_cast<int>(c0) + io.pack;
  const int channels_left = C - first_channel;  // (std::min would take kForwardPack by reference: not in device code)
  io.live_channels = channels_left <= 0 ? 0 : channels_left < kForwardPack ? channels_left : kForwardPack;
  const StepWalk seq = p.walk(io.live_channels > 0 ? first_channel : 0, C);  // within the batch row
  io.seq = static_cast<int>(seq.first);
  io.seq_stride = seq.stride;
  const int row_state = threadIdx.x % kStateGroup;
  io.row_live = row_state < p.group_size();
  const StepWalk row = p.walk(p.group_begin + (io.row_live ? row_state : 0), R);
  io.row = static_cast<int>(row.first);
  io.row_stride = row.stride;
  return io;
}

// What the moving role fetches of the tile at k0, in registers until staged.
// Steps past the sequence, channels past C and states past the group get
// zeros, which makes a step the identity (decay exp(0) = 1, input 0): the
// computing role needs no predicates. V: the vector width of the x and dt
// accesses (it divides the channels and kForwardPack).
template <typename T, int V>
struct ForwardFetch {
  T x[kForwardPack], dt[kForwardPack];
  T b, c;

  __device__ __forceinline__ void fetch(const ForwardIo<T>& io, int k0) {
    const int k = k0 + io.step;
    const bool live_step = k < io.length;
    const int at = io.seq + k * io.seq_stride;
#pragma unroll
    for (int i = 0; i < kForwardPack; i += V) {
      const bool live = live_step && i < io.live_channels;
      const Pack<T, V> xv = live ? load_pack<T, V>(io.x + at + i) : zero_pack<T, V>();
      const Pack<T, V> dtv = live ? load_pack<T, V>(io.dt + at + i) : zero_pack<T, V>();
#pragma unroll
      for (int j = 0; j < V; ++j) {
        x[i + j] = xv.v[j];
        dt[i + j] = dtv.v[j];
      }
    }
    const bool row_live = live_step && io.row_live;
    const int row = io.row + k * io.row_stride;
    b = row_live ? io.Bm[row] : T(0);
    c = row_live ? io.Cm[row] : T(0);
  }

  __device__ __forceinline__ void stage(ForwardStage<T>& s, const ForwardIo<T>& io) const {
    T* pairs = s.xdt[io.step][io.pack];
#pragma unroll
    for (int i = 0; i < kForwardPack; i += 2) {
      store_pack(pairs + 2 * i, Pack<T, 4>{{x[i], dt[i], x[i + 1], dt[i + 1]}});
    }
    s.b[threadIdx.x / kStateGroup][threadIdx.x % kStateGroup] = b;
    s.c[threadIdx.x / kStateGroup][threadIdx.x % kStateGroup] = c;
  }
};

// The computing role's kTile steps of one tile, one straight run of code (no
// per-step branches, so the decays of later steps can be computed while
// earlier steps finish): advances h and leaves its part of each step's
// output, d x + its part of C h, in parts[u][threadIdx.x].
template <typename T>
__device__ __forceinline__ void selective_forward_tile(const ForwardStage<T>& s,
                                                       T (&parts)[kTile][kSelectiveForwardThreads],
                                                       const T (&scaled_a)[kForwardStates], T (&h)[kForwardStates],
                                                       T d) {
  const int channel = threadIdx.x / kForwardSplit, first_state = threadIdx.x % kForwardSplit * kForwardStates;
#pragma unroll
  for (int u = 0; u < kTile; ++u) {
    const Pack<T, 2> xdt = load_pack<T, 2>(s.xdt[u][channel]);
    selective_step(h, scaled_a, s.b[u] + first_state, xdt.v[1], xdt.v[0]);
    T c_row[kForwardStates];
    load_row(s.c[u] + first_state, c_row);
    T out = d * xdt.v[0];
#pragma unroll
    for (int i = 0; i < kForwardStates; ++i) out += c_row[i] * h[i];
    parts[u][threadIdx.x] = out;
  }
}

// The moving role's output for the tile at k0: y of its pack at its step is
// the sum of the pack's channels' parts (in part order); the first group
// writes it, later groups add it.
template <typename T, int V>
__device__ __forceinline__ void write_forward_outputs(const T (&parts)[kTile][kSelectiveForwardThreads],
                                                      const ForwardIo<T>& io, int k0, bool first_group) {
  const int k = k0 + io.step;
  if (k >= io.length) return;
  T sums[kForwardPack * kForwardSplit];  // [channel of the pack][part]
  load_row(parts[io.step] + io.pack * kForwardSplit, sums);
  const int at = io.seq + k * io.seq_stride;
#pragma unroll
  for (int i = 0; i < kForwardPack; i += V) {
    if (i >= io.live_channels) break;
    Pack<T, V> out = first_group ? zero_pack<T, V>() : load_pack<T, V>(io.y + at + i);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      T total = sums[(i + j) * kForwardSplit];
#pragma unroll
      for (int part = 1; part < kForwardSplit; ++part) total += sums[(i + j) * kForwardSplit + part];
      out.v[j] = first_group ? total : out.v[j] + total;
    }
    store_pack(io.y + at + i, out);
  }
}

// Grid (channel blocks, batch). The first group of states writes y = D x +
// C h, later groups add their C h. Iteration k0 stages the tile fetched in
// the previous iteration, passes the barrier, issues the next tile's fetch,
// writes y of the previous tile and computes this one. Inputs and outputs
// alternate between two shared buffers, so one barrier per tile suffices: a
// buffer is rewritten two iterations after it was last read, by a thread
// that has passed the barrier in between, which every thread reaches only
// after finishing that read.
// kSave: also save each tile's entering state in `saved` for the backward.
// At most 80 registers, so that the ViT-S-sized grid (768 blocks) is
// resident in one wave (6 blocks per SM).
template <typename T, int V, bool kSave>
__global__ void __launch_bounds__(kSelectiveForwardThreads, 6)
    selective_forward_kernel(SelectiveArgs<T> p, T* y, T* saved) {
  __shared__ ForwardShared<T> shared;
  const int part = threadIdx.x % kForwardSplit;
  const int64_t n = blockIdx.y, c0 = blockIdx.x * static_cast<int64_t>(kForwardChannels);
  const int64_t c = c0 + threadIdx.x / kForwardSplit;
  const bool valid = c < p.channels, first_group = p.first_group();
  const ForwardIo<T> io = forward_io(p, y, n, c0);
  T scaled_a[kForwardStates], h[kForwardStates];
  load_scaled_a(p, c, valid, part * kForwardStates, scaled_a);
#pragma unroll
  for (int i = 0; i < kForwardStates; ++i) h[i] = T(0);
  const T d = valid && first_group && part == 0 ? p.D[c] : T(0);
  const LaneCheckpoints<T> checkpoints = kSave ? lane_checkpoints(p, saved, n, c0) : LaneCheckpoints<T>{};
  ForwardFetch<T, V> fetched;
  fetched.fetch(io, 0);
  int buffer = 0;
  for (int k0 = 0; k0 < io.length; k0 += kTile, buffer ^= 1) {
    fetched.stage(shared.stage[buffer], io);
    __syncthreads();
    fetched.fetch(io, k0 + kTile);  // (zeros past the end)
    if (k0 > 0) write_forward_outputs<T, V>(shared.parts[buffer ^ 1], io, k0 - kTile, first_group);
    if (kSave && valid) store_row(h, checkpoints.at(k0));
    selective_forward_tile(shared.stage[buffer], shared.parts[buffer], scaled_a, h, d);
  }
  __syncthreads();
  write_forward_outputs<T, V>(shared.parts[buffer ^ 1], io, (io.length - 1) / kTile * kTile, first_group);
}

// ------------------------------------------------------ selective_scan backward

// The backward gives a lane two neighbouring channels and a quarter of their
// states: thread 4 j + q of a block takes the block's channels 2 j and
// 2 j + 1 (a pair), states 4 q .. 4 q + 3 of each, so it still holds 8
// (channel, state) values ([channel][state]) and a warp covers 16 channels.
// The kernel is bound by the MIO path (shared memory, shuffles and the
// exponentials), not by its instruction count, and this layout moves less
// through it: the two channels share the lane's reads of Bm and Cm, and the
// lane adds its two channels' terms of dBm and dCm in registers before they
// cross lanes, which halves what the per-step sums over the warp move
// (WarpStateSum). The four lanes of a pair (a quad) combine their sums for
// dx and ddt with shuffles.
constexpr int kLaneChannels = 2;                                 // channels per lane
constexpr int kQuadLanes = 4;                                    // lanes per pair of channels
constexpr int kChannelStates = kStateGroup / kQuadLanes;         // states per lane and channel
constexpr int kBackwardStates = kLaneChannels * kChannelStates;  // values per lane
constexpr int kSelectiveBackwardThreads = 128;
constexpr int kBackwardBlockChannels = kSelectiveBackwardThreads / kQuadLanes * kLaneChannels;
static_assert(kBackwardBlockChannels == kLaneBlockChannels, "the checkpoints' lanes");
static_assert(kChannelStates == 4 && kLaneChannels == 2, "a lane's states of a channel are one 4-word vector");

// The block's channel of the lane's first channel (c - c0); the second is next to it.
__device__ __forceinline__ int pair_channel() { return threadIdx.x / kQuadLanes * kLaneChannels; }

// Where the backward writes, its scratch, and the forward's checkpoints.
template <typename T>
struct SelectiveBackwardOut {
  T *dx, *ddt;     // written by the first group, added to by later ones
  T* dB_part;      // [B, L, blocks, S]: dBm summed over the 64 channels of each block of a batch row
  T* dC_part;      // [B, L, blocks, S]: likewise dCm
  T* dA_part;      // [B, C, S]: dA (dA_log with a_is_log) of each (batch, channel)
  T* dD_part;      // [B, C] (first group)
  const T* saved;  // the state entering every tile (LaneCheckpoints)
  int64_t blocks;  // blocks per batch row: ceil(C / 64)
};

// A block of the backward takes channels c0 .. c0 + 63 of batch n. Its
// addresses are a part that the whole block shares (kept in uniform
// registers) plus a small offset of the thread's own (its channel c - c0,
// its row element), so that few registers of each thread hold addresses.
struct BackwardBlock {
  StepWalk seq;   // x, dt, dy, dx, ddt: channel c0 of batch n, step by step
  StepWalk rows;  // Bm, Cm: element group_begin of batch n's rows, step by step
  int length;
  int channels;  // of the block: min(C - c0, 64)
};

// What one thread of the backward fetches of a tile of kTile steps at k0: x,
// dt and dy of the block's channel pair i % 32 (channels 2 (i % 32) and
// 2 (i % 32) + 1) at the tile steps i / 32 and i / 32 + 4 (a warp's loads of
// a step are one contiguous run of the block's channels), and one element
// each of the group's Bm and Cm rows (the block's 128 threads cover the
// tile's 8 x 16 elements once). As in the forward, the next tile is fetched
// while the current one is computed.
constexpr int kBackwardBlockPairs = kBackwardBlockChannels / kLaneChannels;

template <typename T>
struct BackwardTileFetch {
  static_assert(kSelectiveBackwardThreads == kTile * kStateGroup, "one row element per thread");
  static constexpr int kStride = kSelectiveBackwardThreads / kBackwardBlockPairs;  // between a thread's steps
  static constexpr int kSteps = kTile / kStride;
  // Zero past the sequence, the channels or the group.
  T x[kSteps][kLaneChannels], dt[kSteps][kLaneChannels], dy[kSteps][kLaneChannels];
  T b, c;

  __device__ static int pair() { return threadIdx.x % kBackwardBlockPairs; }
  __device__ static int first_step() { return threadIdx.x / kBackwardBlockPairs; }

  // A tile past either end of the sequence fetches zeros (the callers fetch
  // unconditionally, which keeps the compiler from holding the previous
  // values through the loop).
  __device__ void fetch(const SelectiveArgs<T>& p, const T* dy_in, const BackwardBlock& block, int k0) {
    const int channel = pair() * kLaneChannels, steps_left = k0 >= 0 ? block.length - k0 : 0;
#pragma unroll
    for (int j = 0; j < kSteps; ++j) {
      const int64_t at = block.seq.at(k0 + j * kStride) + (first_step() * block.seq.stride + channel);
#pragma unroll
      for (int e = 0; e < kLaneChannels; ++e) {
        const bool live = first_step() + j * kStride < steps_left && channel + e < block.channels;
        x[j][e] = live ? p.x[at + e] : T(0);
        dt[j][e] = live ? p.dt[at + e] : T(0);
        dy[j][e] = live ? dy_in[at + e] : T(0);
      }
    }
    const int u = threadIdx.x / kStateGroup, s = threadIdx.x % kStateGroup;
    const bool live = k0 >= 0 && s < p.group_size() && u < block.length - k0;
    // (The offset from the first row in 32 bits, L times the row stride
    // being checked to fit an int on the host: 64-bit offsets take registers
    // the walk back needs.)
    const int64_t at = block.rows.first + ((k0 + u) * block.rows.stride + s);
    b = live ? p.Bm[at] : T(0);
    c = live ? p.Cm[at] : T(0);
  }
};

// The backward's shared copy of the current tile: the group's Bm and Cm rows,
// and per step and channel pair the pair's x and dt (x, x, dt, dt: one
// 16-byte read, which the quad's 4 lanes share) and its dy. Reading these
// here rather than holding them in registers leaves the registers to the
// states and the lane's scaled A.
template <typename T>
struct BackwardShared {
  alignas(4 * sizeof(T)) T b[kTile][kStateGroup];
  alignas(4 * sizeof(T)) T c[kTile][kStateGroup];
  alignas(4 * sizeof(T)) T xdt[kTile][kBackwardBlockPairs][2 * kLaneChannels];
  alignas(4 * sizeof(T)) T dy[kTile][kBackwardBlockPairs][kLaneChannels];

  // between() runs after the first barrier, while the block has finished
  // the previous tile and not yet started this one.
  template <typename Between>
  __device__ void store(const BackwardTileFetch<T>& fetched, const Between& between) {
    using Fetch = BackwardTileFetch<T>;
    __syncthreads();  // everyone is done with the previous tile
    between();
    b[threadIdx.x / kStateGroup][threadIdx.x % kStateGroup] = fetched.b;
    c[threadIdx.x / kStateGroup][threadIdx.x % kStateGroup] = fetched.c;
#pragma unroll
    for (int j = 0; j < Fetch::kSteps; ++j) {
      const int u = Fetch::first_step() + j * Fetch::kStride;
      const T(&x)[kLaneChannels] = fetched.x[j];
      const T(&dt)[kLaneChannels] = fetched.dt[j];
      store_pack(xdt[u][Fetch::pair()], Pack<T, 4>{{x[0], x[1], dt[0], dt[1]}});
      store_pack(dy[u][Fetch::pair()], Pack<T, 2>{{fetched.dy[j][0], fetched.dy[j][1]}});
    }
    __syncthreads();
  }
  // Step u's x, x, dt, dt and dy, dy of the lane's two channels.
  __device__ Pack<T, 4> xdt_at(int u) const { return load_pack<T, 4>(xdt[u][threadIdx.x / kQuadLanes]); }
  __device__ Pack<T, 2> dy_at(int u) const { return load_pack<T, 2>(dy[u][threadIdx.x / kQuadLanes]); }
};

// The states of the tile being walked back (dynamic shared memory), in a
// region per warp: slot u = 1..7 holds the states entering step k0 + u (the
// state entering step k0 is the tile's checkpoint), each lane's 8 values in
// pairs, the warp's 32 lanes contiguous: one conflict-free 2-word access per
// pair. (As 4-word vectors the walk back spilled at 80 registers.) Once the
// walk back has read the last slot (first), that slot collects the warp's
// sums of the whole tile (totals(): [step][32], word l < 16 dCm of state l,
// word l >= 16 dBm of state l - 16) for the block to add up at the tile's
// end.
constexpr int kWindowSlots = kTile - 1;
constexpr int kSlotWords = kBackwardStates * kWarpSize;
constexpr int kBackwardBlockWarps = kSelectiveBackwardThreads / kWarpSize;
static_assert(kSlotWords == kTile * kWarpSize, "the last slot holds a tile of the warp's sums");

template <typename T>
struct StateWindow {
  T* region;  // the warp's

  __device__ explicit StateWindow(T* window) : region(window + threadIdx.x / kWarpSize * kWindowSlots * kSlotWords) {}
  __device__ T* slot(int u) const { return region + (u - 1) * kSlotWords; }
  // The warp's sums of the tile (its last slot), and those of warp w of the block.
  __device__ T* own_totals() const { return slot(kWindowSlots); }
  __device__ T* totals(int w) const {
    return region + ((w - static_cast<int>(threadIdx.x / kWarpSize)) * kWindowSlots + kWindowSlots - 1) * kSlotWords;
  }
  __device__ void store(int u, const T (&h)[kBackwardStates]) const {
#pragma unroll
    for (int k = 0; k < kBackwardStates / 2; ++k) {
      store_pack(slot(u) + (k * kWarpSize + threadIdx.x % kWarpSize) * 2, Pack<T, 2>{{h[2 * k], h[2 * k + 1]}});
    }
  }
  __device__ void load(int u, T (&h)[kBackwardStates]) const {
#pragma unroll
    for (int k = 0; k < kBackwardStates / 2; ++k) {
      const Pack<T, 2> pair = load_pack<T, 2>(slot(u) + (k * kWarpSize + threadIdx.x % kWarpSize) * 2);
      h[2 * k] = pair.v[0];
      h[2 * k + 1] = pair.v[1];
    }
  }
};

// A lane's checkpoint of the tile at k0 (zero for its channels past the
// block's). The forward's lanes hold 8 states of one channel (state s of
// channel j at lane 2 j + s / 8, element s % 8), so states 4 q .. 4 q + 3
// of channel j are 4 contiguous elements, 16 j + 4 q from the block's first:
// one 16-byte load per channel.
template <typename T>
__device__ __forceinline__ void load_checkpoint(const LaneCheckpoints<const T>& checkpoints, int k0, int block_channels,
                                                T (&h)[kBackwardStates]) {
  const int channel = pair_channel(), first_state = threadIdx.x % kQuadLanes * kChannelStates;
  const T* at = checkpoints.tile(k0) + (channel * kStateGroup + first_state);
#pragma unroll
  for (int e = 0; e < kLaneChannels; ++e) {
    const Pack<T, kChannelStates> v = channel + e < block_channels ? load_pack<T, kChannelStates>(at + e * kStateGroup)
                                                                   : zero_pack<T, kChannelStates>();
#pragma unroll
    for (int i = 0; i < kChannelStates; ++i) h[e * kChannelStates + i] = v.v[i];
  }
}

// One scan step of the lane's two channels (advanced_state, as the forward),
// reading the Bm row once for both. xdt: x, x, dt, dt of the two channels.
template <typename T>
__device__ __forceinline__ void pair_step(T (&h)[kBackwardStates], const T (&scaled_a)[kBackwardStates],
                                          const T* b_row, const Pack<T, 4>& xdt) {
  T b[kChannelStates];
  load_row(b_row, b);
#pragma unroll
  for (int e = 0; e < kLaneChannels; ++e) {
    const T step = xdt.v[kLaneChannels + e], input = step * xdt.v[e];
#pragma unroll
    for (int i = 0; i < kChannelStates; ++i) {
      const int s = e * kChannelStates + i;
      h[s] = advanced_state(h[s], step, scaled_a[s], input, b[i]);
    }
  }
}

// dCm and dBm of one step summed over the warp's 16 channels. Each lane has
// already added its two channels, leaving 8 values: dCm, then dBm, of its 4
// states. The 8 lanes of a quad position (lanes 4 apart: the same states)
// sum them with group_sum_transposed, each ending with one total: lane 4 r +
// q gets value r, dCm (r < 4) or dBm (r >= 4) of state 4 q + r % 4. That is
// 7 warp-wide shuffles through the MIO path, where a transpose through
// shared memory (the warp's 256 values stored, then read back) takes 16
// cycles of its bandwidth. The totals go to the warp's [step][32] array as
// StateWindow::totals() lays them out: `at` is where the lane's goes.
struct WarpStateSum {
  static_assert(kBackwardStates == 2 * kChannelStates && kBackwardStates * kQuadLanes == kWarpSize,
                "lane 4 r + q's total is value r of the lanes 4 apart");
  int at;  // the lane's total's place: 16 for dBm + the state

  __device__ WarpStateSum() {
    const int lane = threadIdx.x % kWarpSize, r = lane / kQuadLanes;
    at = r / kChannelStates * kStateGroup + lane % kQuadLanes * kChannelStates + r % kChannelStates;
  }
  template <typename T>
  __device__ __forceinline__ T sum(T (&v)[kBackwardStates]) const {
    return group_sum_transposed<kBackwardStates, kQuadLanes>(v);
  }
};

// The backward needs h_{k-1} and h_k at every step k, walking k downwards,
// while the forward keeps only the current state. The forward saves the state
// entering every tile of kTile steps (LaneCheckpoints; the launcher runs it
// for them when the caller kept none); then, tile by tile from the last, the
// tile is replayed forward from its checkpoint into a shared-memory window and
// walked back (the reverse step is SelectiveScanCpu::backward with its
// products regrouped). The window holds the state entering each step but the
// first (the checkpoint, reread); the state after a step, which dCm needs, is
// the one entering the step walked back before it (after the tile's last step:
// the replay's final state).
//
// Grid (blocks of 64 channels, batch); thread 4 j + q of a block takes states
// 4 q .. 4 q + 3 of the block's channels 2 j and 2 j + 1 (above). A tile's x,
// dt and dy go through shared memory. Per step, the quad combines its 4 sums
// (dx and ddt of 2 channels) with 3 shuffles, each lane ending with one that
// it writes (q = 0, 1: dx of channel 2 j + q; q = 2, 3: ddt of channel
// 2 j + q - 2); dA stays per lane (its own values); dD is the dx lanes'. Lanes past C
// idle through the loops (contributing exact zeros: their A, x, dt, dy and
// checkpoints are zero) because the whole warp takes part in the shuffles, and
// the whole block in staging the tile. The walk back is unrolled over the tile
// (one straight run of code per tile).
//
// float: at most 80 registers, so that 6 blocks (24 warps) share an SM: each
// takes 28 KiB of window and 7 KiB of tile. double: twice that, 3 blocks.
template <typename T>
constexpr int kSelectiveBackwardBlocksPerSm = sizeof(T) == 4 ? 6 : 3;

// The block's dBm and dCm of the tile at k0: each warp's sums (its totals
// slot) added in warp order, into the block's column of the partial rows
// (summed over the blocks of a batch row afterwards). Every thread of the
// block takes part; the warps must be done with the tile (a barrier).
template <typename T>
__device__ void write_block_state_sums(const SelectiveArgs<T>& p, const SelectiveBackwardOut<T>& q,
                                       const StateWindow<T>& window, int k0) {
  const int steps = p.length - k0 < kTile ? static_cast<int>(p.length) - k0 : kTile;
  const StepWalk rows = p.walk((blockIdx.y * p.length * q.blocks + blockIdx.x) * p.state + p.group_begin,
                               q.blocks * p.state);
  for (int at = threadIdx.x; at < kTile * kWarpSize; at += kSelectiveBackwardThreads) {
    const int u = at / kWarpSize, lane = at % kWarpSize, s = lane % kStateGroup;
    if (u >= steps || s >= p.group_size()) continue;
    T total = window.totals(0)[at];
#pragma unroll
    for (int w = 1; w < kBackwardBlockWarps; ++w) total += window.totals(w)[at];
    (lane < kStateGroup ? q.dC_part : q.dB_part)[rows.at(k0 + u) + s] = total;
  }
}

template <typename T>
__global__ void __launch_bounds__(kSelectiveBackwardThreads, kSelectiveBackwardBlocksPerSm<T>)
    selective_backward_kernel(SelectiveArgs<T> p, const T* dy, SelectiveBackwardOut<T> q) {
  extern __shared__ unsigned char window_bytes[];
  __shared__ BackwardShared<T> tile;
  const StateWindow<T> window(reinterpret_cast<T*>(window_bytes));
  const int quad = threadIdx.x % kQuadLanes, first_state = quad * kChannelStates;
  const int channel = pair_channel();  // c - c0 of the first of the lane's channels
  const int own = channel + quad % kLaneChannels;  // c - c0 of the channel whose dx (quad 0, 1) or ddt the lane writes
  const int64_t n = blockIdx.y, c0 = blockIdx.x * static_cast<int64_t>(kBackwardBlockChannels);
  const int L = static_cast<int>(p.length);  // (checked on the host)
  const BackwardBlock block{p.channel_steps(n, c0), p.state_steps(n, 0), L,
                            static_cast<int>(std::min<int64_t>(p.channels - c0, kBackwardBlockChannels))};
  const LaneCheckpoints<const T> checkpoints = lane_checkpoints(p, q.saved, n, c0);
  T a[kBackwardStates];
#pragma unroll
  for (int e = 0; e < kLaneChannels; ++e) {
    T scaled_a[kChannelStates];
    load_scaled_a(p, c0 + channel + e, channel + e < block.channels, first_state, scaled_a);
#pragma unroll
    for (int i = 0; i < kChannelStates; ++i) a[e * kChannelStates + i] = scaled_a[i];
  }

  // Tiles from the last to the first.
  T h[kBackwardStates];
  T dh[kBackwardStates], dA[kBackwardStates];  // dh: dL/dh carried backwards through the steps
#pragma unroll
  for (int i = 0; i < kBackwardStates; ++i) dh[i] = dA[i] = T(0);
  T dD[kLaneChannels] = {T(0), T(0)};
  // D x enters dx once per channel, on the lane that writes it.
  const T d = own < block.channels && p.first_group() && quad < kLaneChannels ? p.D[c0 + own] : T(0);
  // The warp's sums of dCm and dBm, one state of one of them per lane,
  // collected per tile and added up over the block's warps.
  const WarpStateSum state_sum;
  const int last_tile = (L - 1) / kTile * kTile;
  BackwardTileFetch<T> next;
  next.fetch(p, dy, block, last_tile);
  for (int k0 = last_tile; k0 >= 0; k0 -= kTile) {
    const int steps = L - k0 < kTile ? L - k0 : kTile;
    tile.store(next, [&] {
      if (k0 != last_tile) write_block_state_sums(p, q, window, k0 + kTile);
    });
    // Replay: window slot u <- the state entering step k0 + u, for u = 1..7;
    // h <- the state after step k0 + 7 (after the tile's last step: steps
    // past the sequence are identity steps).
    load_checkpoint(checkpoints, k0, block.channels, h);
#pragma unroll
    for (int u = 0; u < kTile; ++u) {
      pair_step(h, a, tile.b[u] + first_state, tile.xdt_at(u));
      if (u + 1 < kTile) window.store(u + 1, h);
    }
    // Walk back. h is the state after the step walked back (dCm's factor):
    // the state entering the step walked back before it.
#pragma unroll
    for (int u = kTile - 1; u >= 0; --u) {
      // The next tile's fetch is issued at step 0, so that its registers are
      // held through that step only, which covers some of the loads' latency.
      if (u == 0) next.fetch(p, dy, block, k0 - kTile);
      T prev[kBackwardStates];  // the state entering the step
      if (u > 0) {
        window.load(u, prev);
      } else {
        load_checkpoint(checkpoints, k0, block.channels, prev);
      }
      // A step past the sequence is an identity step: h equals prev there.
      // Taking prev on both paths saves copying h at every step.
      if (u >= steps) {
#pragma unroll
        for (int i = 0; i < kBackwardStates; ++i) h[i] = prev[i];
        continue;
      }
      const Pack<T, 4> xdt = tile.xdt_at(u);
      const Pack<T, 2> dy_pair = tile.dy_at(u);
      const T g[kLaneChannels] = {dy_pair.v[0], dy_pair.v[1]};
      const T x[kLaneChannels] = {xdt.v[0], xdt.v[1]}, step[kLaneChannels] = {xdt.v[2], xdt.v[3]};
      T grads[kBackwardStates];  // dCm, then dBm, of the lane's states (its 2 channels added)
#pragma unroll
      for (int i = 0; i < kChannelStates; ++i) grads[i] = g[0] * h[i] + g[1] * h[kChannelStates + i];
      T dh_b[kLaneChannels], ddt_exponent[kLaneChannels];  // sum_s dh[s] Bm[s], sum_s dL/d(dt A[s]) A[s]
      T b_row[kChannelStates], c_row[kChannelStates];
      load_row(tile.b[u] + first_state, b_row);
      load_row(tile.c[u] + first_state, c_row);
      // States past the group have zero rows and A, so every term below is
      // zero for them; at k = 0 the state entering the step (the first
      // checkpoint) is zero, so the decay's gradient vanishes there as in the
      // CPU reference. The CPU's per-state terms dh step Bm (dx) and
      // dh Bm x (ddt) share the factor dh Bm, summed once here.
#pragma unroll
      for (int e = 0; e < kLaneChannels; ++e) {
        const T input = step[e] * x[e];
        dh_b[e] = ddt_exponent[e] = T(0);
#pragma unroll
        for (int i = 0; i < kChannelStates; ++i) {
          const int s = e * kChannelStates + i;
          const T decay = decay_of(step[e], a[s]);
          dh[s] += g[e] * c_row[i];  // dh[s] is now the full dL/dh_t
          dh_b[e] += dh[s] * b_row[i];
          T& dB = grads[kChannelStates + i];
          dB = e == 0 ? dh[s] * input : dB + dh[s] * input;
          dh[s] *= decay;                        // on to dL/dh_prev
          const T d_exponent = dh[s] * prev[s];  // dL/d(dt_t A[s])
          dA[s] += d_exponent * step[e];
          ddt_exponent[e] += d_exponent * a[s];  // A[s] up to decay_exponent_scale, undone below
          h[s] = prev[s];
        }
      }
      const T dC_or_dB = state_sum.sum(grads);
      // The quad's lane q ends with the total of parts[q] (in lane order).
      T parts[kQuadLanes] = {dh_b[0] * step[0], dh_b[1] * step[1],
                             dh_b[0] * x[0] + decay_exponent_unscale(ddt_exponent[0]),
                             dh_b[1] * x[1] + decay_exponent_unscale(ddt_exponent[1])};
      const T total = d * (quad % 2 ? g[1] : g[0]) + group_sum_transposed<kQuadLanes, 1>(parts);
      if (u == steps - 1) __syncwarp();  // (the first step walked back) the warp has read the last slot
      window.own_totals()[u * kWarpSize + state_sum.at] = dC_or_dB;
      if (own < block.channels) {
        T& dst = (quad < kLaneChannels ? q.dx : q.ddt)[block.seq.at(k0 + u) + own];
        dst = p.first_group() ? total : dst + total;
      }
#pragma unroll
      for (int e = 0; e < kLaneChannels; ++e) dD[e] += g[e] * x[e];
    }
  }
  __syncthreads();
  write_block_state_sums(p, q, window, 0);
#pragma unroll
  for (int e = 0; e < kLaneChannels; ++e) {
    if (channel + e >= block.channels) continue;
    const int64_t task = n * p.channels + c0 + channel + e;
#pragma unroll
    for (int i = 0; i < kChannelStates; ++i) {
      if (first_state + i < p.group_size()) {
        // With A_log: dL/dA_log = dL/dA * A, applied before the batch's sum (linear).
        const int s = e * kChannelStates + i;
        q.dA_part[task * p.state + p.group_begin + first_state + i] =
            p.a_is_log ? dA[s] * decay_exponent_unscale(a[s]) : dA[s];
      }
    }
    if (p.first_group() && quad == e) q.dD_part[task] = dD[e];
  }
}

// Runs launch(args) once per group of kStateGroup states.
template <typename T, typename Launch>
void for_each_state_group(SelectiveArgs<T> p, const Launch& launch) {
  check(p.batch <= 65535, "selective_scan (cuda): batch {} is above the grid's limit of 65535", p.batch);
  for (p.group_begin = 0; p.group_begin < p.state; p.group_begin += kStateGroup) launch(p);
}

// Writes y; with save_states, returns the checkpoints (LaneCheckpoints).
template <typename T>
Tensor selective_forward_launch(const SelectiveScanInputs& in, const Tensor& y, bool save_states, bool reverse) {
  const int64_t B = in.x.shape()[0], L = in.x.shape()[1], C = in.x.shape()[2], S = in.A.shape()[1];
  const int64_t R = in.row_stride();
  check(L * C <= INT32_MAX - kTile * C && L * R <= INT32_MAX - kTile * R,
        "selective_scan (cuda): a batch row of [{}, {}] or [{}, {}] is beyond 32-bit offsets", L, C, L, R);
  check(!save_states || B * C * kStateGroup <= INT32_MAX,  // (an inference forward writes no checkpoints)
        "selective_scan (cuda): [B, C] = [{}, {}] is beyond the checkpoints' 32-bit tile stride", B, C);
  const Tensor saved = save_states ? scratch(checkpoint_elements(B, L, C, S), in.x) : Tensor();
  const int width = std::min(pack_width<T>(C, {&in.x, &in.dt, &y}), kForwardPack);  // V divides a pack
  with_pack_width<T>(width, [&](auto v) {
    constexpr int V = decltype(v)::value;
    for_each_state_group(selective_args<T>(in, reverse), [&](const SelectiveArgs<T>& p) {
      const dim3 grid(blocks_for(p.channels, kForwardChannels), static_cast<unsigned>(p.batch));
      auto* kernel = save_states ? selective_forward_kernel<T, V, true> : selective_forward_kernel<T, V, false>;
      kernel<<<grid, kSelectiveForwardThreads, 0, current_stream()>>>(p, data_or_null<T>(y), data_or_null<T>(saved));
      CUDA_CHECK_LAUNCH();
    });
  });
  return saved;
}

template <typename T>
void selective_backward_launch(const SelectiveScanInputs& in, Tensor saved, const Tensor& dy,
                               const SelectiveScanGrads& grads, bool reverse) {
  const SelectiveArgs<T> args = selective_args<T>(in, reverse);
  const int64_t B = args.batch, L = args.length, C = args.channels, S = args.state, R = args.row_stride;
  check(L <= INT32_MAX - kTile && L * R <= INT32_MAX - kTile * R,
        "selective_scan (cuda): length {} is beyond the backward's step counters or a batch row of [{}, {}] beyond "
        "32-bit offsets", L, L, R);
  if (!saved.defined()) {
    const Tensor y = Tensor::empty_like(in.x);  // (not needed)
    saved = selective_forward_launch<T>(in, y, /*save_states=*/true, reverse);
  }
  check(saved.numel() == checkpoint_elements(B, L, C, S) && saved.dtype() == in.x.dtype(),
        "selective_scan_backward (cuda): the saved states {} are not the forward's for [B, L, C, S] = [{}, {}, {}, {}]",
        saved, B, L, C, S);
  const int64_t blocks = (C + kBackwardBlockChannels - 1) / kBackwardBlockChannels;  // per batch row
  Tensor dB_part = scratch(B * L * blocks * S, in.x), dC_part = scratch(B * L * blocks * S, in.x);
  Tensor dA_part = scratch(B * C * S, in.x), dD_part = scratch(B * C, in.x);
  const SelectiveBackwardOut<T> q{data_or_null<T>(grads.dx),    data_or_null<T>(grads.ddt), data_or_null<T>(dB_part),
                                  data_or_null<T>(dC_part),     data_or_null<T>(dA_part),   data_or_null<T>(dD_part),
                                  data_or_null<const T>(saved), blocks};
  const size_t window_bytes = kWindowSlots * kBackwardStates * kSelectiveBackwardThreads * sizeof(T);
  cuda_check(cudaFuncSetAttribute(selective_backward_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(window_bytes)),
             "selective_backward_kernel: shared memory size");
  // The windows of 6 blocks (float) fill the SM's shared memory: ask for all of it.
  cuda_check(cudaFuncSetAttribute(selective_backward_kernel<T>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                  cudaSharedmemCarveoutMaxShared),
             "selective_backward_kernel: shared memory carveout");
  for_each_state_group(args, [&](const SelectiveArgs<T>& p) {
    const dim3 grid(blocks_for(C, kBackwardBlockChannels), static_cast<unsigned>(B));
    selective_backward_kernel<T>
        <<<grid, kSelectiveBackwardThreads, window_bytes, current_stream()>>>(p, data_or_null<const T>(dy), q);
    CUDA_CHECK_LAUNCH();
  });
  // dBm[b, t] and dCm[b, t] sum the blocks of batch b; dA and dD sum the batch.
  sum_partial_rows(data_or_null<const T>(dB_part), B * L, blocks, S, data_or_null<T>(grads.dBm));
  sum_partial_rows(data_or_null<const T>(dC_part), B * L, blocks, S, data_or_null<T>(grads.dCm));
  sum_partial_rows(data_or_null<const T>(dA_part), 1, B, C * S, data_or_null<T>(grads.dA));
  sum_partial_rows(data_or_null<const T>(dD_part), 1, B, C, data_or_null<T>(grads.dD));
}

Tensor selective_scan_cuda(const SelectiveScanInputs& in, const Tensor& y, bool save_states, bool reverse) {
  DeviceGuard guard(in.x);
  Tensor saved;
  dispatch_float(in.x.dtype(), "selective_scan", [&](auto tag) {
    saved = selective_forward_launch<decltype(tag)>(in, y, save_states, reverse);
  });
  return saved;
}

void selective_scan_backward_cuda(const SelectiveScanInputs& in, const Tensor& saved, const Tensor& dy,
                                  const SelectiveScanGrads& grads, bool reverse) {
  DeviceGuard guard(in.x);
  dispatch_float(in.x.dtype(), "selective_scan_backward", [&](auto tag) {
    selective_backward_launch<decltype(tag)>(in, saved, dy, grads, reverse);
  });
}

}  // namespace

// Fills the CUDA side of the slots defined in selective_scan_cpu.cpp (constant-initialised,
// so they exist before this runs).
static const bool registered = [] {
  selective_scan_kernel.cuda = &selective_scan_cuda;
  selective_scan_backward_kernel.cuda = &selective_scan_backward_cuda;
  return true;
}();

}  // namespace engine

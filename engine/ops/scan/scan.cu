// CUDA kernels of the scan family: the contracts are in scan_kernels.h and the
// reference semantics in scan_cpu.cpp, which these kernels mirror operation
// for operation (same summation orders where the CPU fixes one), so the two
// devices agree to rounding. Tensors arrive contiguous, [batch, length,
// channels]; element (n, t, c) is at (n * length + t) * channels + c.
//
//   linear_scan          one warp per (batch, channel) sequence: the 32 lanes
//                        split the sequence into contiguous chunks, each chunk
//                        is an affine map (A, H), a shuffle scan over the lanes
//                        gives every chunk its incoming state, and each lane
//                        then replays its chunk from that carry. The backward
//                        is the same warp scan run the other way on dL/dh.
//   selective_scan       one thread per (batch, channel), walking the sequence
//                        with its S states in registers (S <= 64). The backward
//                        recomputes the states from checkpoints (see below) and
//                        reduces the shared parameters' gradients through
//                        partial sums added in a fixed order: no atomics, so
//                        the results are bit-reproducible.
//   depthwise_conv1d     one thread per output element; dweight and dbias via
//                        per-batch partial sums, reduced in a fixed order.
//
// Launch and error helpers are local to this file (the shared CUDA header may
// replace them later). Everything runs on the legacy default stream, so the
// scratch tensors freed when a host function returns are only reused by work
// queued after these kernels.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/scan/scan_kernels.h"

namespace engine {

namespace {

// ------------------------------------------------------------------ helpers

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// After every launch: a bad configuration or an earlier asynchronous fault
// surfaces here, naming the kernel.
void check_launch(const char* kernel) { cuda_check(cudaGetLastError(), kernel); }

// Kernels run on the device that holds the tensors.
void use_device(const Tensor& t) { cuda_check(cudaSetDevice(t.device().index), "cudaSetDevice"); }

// Blocks of `threads` covering `items` (one item per thread).
unsigned blocks_for(int64_t items, int64_t threads) {
  const int64_t blocks = (items + threads - 1) / threads;
  check(blocks >= 1 && blocks <= INT32_MAX, "scan (cuda): {} items is beyond one launch", items);
  return static_cast<unsigned>(blocks);
}

// For grid-stride loops: enough blocks to fill the GPU, never more than needed.
unsigned grid_stride_blocks(int64_t items, int64_t threads) {
  return static_cast<unsigned>(std::min<int64_t>((items + threads - 1) / threads, int64_t{1} << 16));
}

template <typename T>
const T* in_ptr(const Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.raw_data()) : nullptr;
}
template <typename T>
T* out_ptr(const Tensor& t) {
  return t.defined() ? static_cast<T*>(t.raw_data()) : nullptr;
}

// Scratch memory on the tensors' device, freed with the returned Tensor.
Tensor scratch(int64_t elements, const Tensor& like) { return Tensor::empty({elements}, like.dtype(), like.device()); }

// SequenceOrder::at for device code.
__device__ __forceinline__ int64_t time_at(int64_t step, int64_t length, bool reverse) {
  return reverse ? length - 1 - step : step;
}

__device__ __forceinline__ float exp_of(float v) { return expf(v); }
__device__ __forceinline__ double exp_of(double v) { return exp(v); }

// Sum over the 32 lanes of a warp (butterfly: every lane ends with the same
// value, and the order of additions is fixed, so the result is reproducible).
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// out[m * n + i] = sum of part[(m * rows + r) * n + i] over r = 0..rows-1,
// added in that order (the deterministic second stage of every reduction).
template <typename T>
__global__ void sum_rows_kernel(const T* part, int64_t batches, int64_t rows, int64_t n, T* out) {
  const int64_t total = batches * n;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = idx / n, i = idx % n;
    T acc = T(0);
    for (int64_t r = 0; r < rows; ++r) acc += part[(m * rows + r) * n + i];
    out[idx] = acc;
  }
}

template <typename T>
void sum_rows(const T* part, int64_t batches, int64_t rows, int64_t n, T* out) {
  constexpr int threads = 256;
  sum_rows_kernel<T><<<grid_stride_blocks(batches * n, threads), threads>>>(part, batches, rows, n, out);
  check_launch("scan sum_rows_kernel");
}

// -------------------------------------------------------------- linear_scan

// One warp runs the recurrence state_j = coef(j) * state_{j-1} + input(j),
// state_{-1} = 0, over steps j = 0..length-1 and hands each state to
// rec.emit(j, state). Lane i owns the contiguous steps [i * chunk, (i + 1) * chunk).
//
// A chunk maps its incoming state s to A * s + H (A the product of its coefs,
// H its result from a zero state). Composing chunk 1 then chunk 2 gives
// (A2 * A1, A2 * H1 + H2), an associative operator, so an inclusive shuffle
// scan over the lanes gives, at lane i, the state after chunk i; lane i's
// incoming state (the carry) is lane i-1's. Each lane then replays its chunk
// from the carry, the same sequential recurrence as the CPU, and emits the
// states. The state never leaves registers; the inputs are read twice.
template <typename Rec>
__device__ void warp_linear_recurrence(const Rec& rec, int64_t length) {
  using T = typename Rec::value_type;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t chunk = (length + kWarpSize - 1) / kWarpSize;
  const int64_t begin = std::min(length, lane * chunk), end = std::min(length, begin + chunk);

  T A = T(1), H = T(0);  // empty chunks (short sequences) are the identity map
  for (int64_t j = begin; j < end; ++j) {
    const T coef = rec.coef(j);
    A = coef * A;
    H = coef * H + rec.input(j);
  }
#pragma unroll
  for (int offset = 1; offset < kWarpSize; offset *= 2) {
    const T A_before = __shfl_up_sync(kFullMask, A, offset);
    const T H_before = __shfl_up_sync(kFullMask, H, offset);
    if (lane >= offset) {  // (A, H) <- this lane's map after the earlier one
      H = A * H_before + H;
      A = A * A_before;
    }
  }
  T state = __shfl_up_sync(kFullMask, H, 1);
  if (lane == 0) state = T(0);
  for (int64_t j = begin; j < end; ++j) {
    state = rec.coef(j) * state + rec.input(j);
    rec.emit(j, state);
  }
}

// Where sequence (n, c) keeps time t: base + t * stride, base = n * L * C + c.
struct SequenceView {
  int64_t base, stride, length;
  bool reverse;
  __device__ int64_t at_step(int64_t k) const { return base + time_at(k, length, reverse) * stride; }
};

// Forward: recurrence step j is scan step j: h = a * h_prev + b.
template <typename T>
struct LinearForwardRec {
  using value_type = T;
  const T* a;
  const T* b;
  T* h;
  SequenceView seq;
  __device__ T coef(int64_t j) const { return a[seq.at_step(j)]; }
  __device__ T input(int64_t j) const { return b[seq.at_step(j)]; }
  __device__ void emit(int64_t j, T state) const { h[seq.at_step(j)] = state; }
};

// Backward: recurrence step j is scan step k = L-1-j, and the state is
// dL/dh_k = g_k + a_{k+1} dL/dh_{k+1} (no a_{k+1} for the last scan step: its
// coef multiplies the zero initial state, 0 keeps that exact). Emits
// db_k = dh_k and da_k = dh_k * h_{k-1} (h_{-1} = 0), h being the forward output.
template <typename T>
struct LinearBackwardRec {
  using value_type = T;
  const T* a;
  const T* h;
  const T* g;
  T* da;
  T* db;
  SequenceView seq;
  __device__ int64_t step_of(int64_t j) const { return seq.length - 1 - j; }
  __device__ T coef(int64_t j) const {
    const int64_t k = step_of(j);
    return k + 1 < seq.length ? a[seq.at_step(k + 1)] : T(0);
  }
  __device__ T input(int64_t j) const { return g[seq.at_step(step_of(j))]; }
  __device__ void emit(int64_t j, T dh) const {
    const int64_t k = step_of(j), at = seq.at_step(k);
    db[at] = dh;
    da[at] = k > 0 ? dh * h[seq.at_step(k - 1)] : T(0);
  }
};

constexpr int kScanWarpsPerBlock = 8;  // 8 neighbouring channels per block share cache lines

// One warp per (batch, channel) sequence; consecutive warps take consecutive
// channels, so the strided loads of a block's warps fall in the same sectors.
template <typename Rec>
__global__ void linear_scan_warp_kernel(Rec rec, int64_t batch, int64_t length, int64_t channels, bool reverse) {
  const int64_t sequence = blockIdx.x * static_cast<int64_t>(kScanWarpsPerBlock) + threadIdx.x / kWarpSize;
  if (sequence >= batch * channels) return;  // the whole warp leaves together
  const int64_t n = sequence / channels, c = sequence % channels;
  rec.seq = SequenceView{n * length * channels + c, channels, length, reverse};
  warp_linear_recurrence(rec, length);
}

// One thread per (batch, channel) sequence, sequential over time: consecutive
// threads take consecutive channels, so each step of a warp is one coalesced
// 128-byte load or store. With enough sequences to fill the GPU this moves
// the fewest bytes; the warp-scan kernel above serves few, long sequences.
template <typename Rec>
__global__ void linear_scan_thread_kernel(Rec rec, int64_t batch, int64_t length, int64_t channels, bool reverse) {
  const int64_t sequence = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (sequence >= batch * channels) return;
  const int64_t n = sequence / channels, c = sequence % channels;
  rec.seq = SequenceView{n * length * channels + c, channels, length, reverse};
  typename Rec::value_type state = 0;
  for (int64_t j = 0; j < length; ++j) {
    state = rec.coef(j) * state + rec.input(j);
    rec.emit(j, state);
  }
}

// Sequences from which one thread each keeps every SM busy (132 SMs x 256).
constexpr int64_t kThreadScanMinSequences = 32768;
constexpr int kThreadScanBlock = 256;

template <typename Rec>
void launch_linear_scan(Rec rec, const Tensor& a, bool reverse, const char* name) {
  const int64_t batch = a.shape()[0], length = a.shape()[1], channels = a.shape()[2];
  const int64_t sequences = batch * channels;
  if (sequences >= kThreadScanMinSequences) {
    linear_scan_thread_kernel<Rec><<<blocks_for(sequences, kThreadScanBlock), kThreadScanBlock>>>(
        rec, batch, length, channels, reverse);
  } else {
    linear_scan_warp_kernel<Rec><<<blocks_for(sequences, kScanWarpsPerBlock), kScanWarpsPerBlock * kWarpSize>>>(
        rec, batch, length, channels, reverse);
  }
  check_launch(name);
}

void linear_scan_cuda(const Tensor& a, const Tensor& b, const Tensor& h, bool reverse) {
  use_device(a);
  dispatch_float(a.dtype(), "linear_scan", [&](auto tag) {
    using T = decltype(tag);
    LinearForwardRec<T> rec{in_ptr<T>(a), in_ptr<T>(b), out_ptr<T>(h), {}};
    launch_linear_scan(rec, a, reverse, "linear_scan kernel (forward)");
  });
}

void linear_scan_backward_cuda(const Tensor& a, const Tensor& h, const Tensor& g, const Tensor& da, const Tensor& db,
                               bool reverse) {
  use_device(a);
  dispatch_float(a.dtype(), "linear_scan_backward", [&](auto tag) {
    using T = decltype(tag);
    LinearBackwardRec<T> rec{in_ptr<T>(a), in_ptr<T>(h), in_ptr<T>(g), out_ptr<T>(da), out_ptr<T>(db), {}};
    launch_linear_scan(rec, a, reverse, "linear_scan kernel (backward)");
  });
}

// ----------------------------------------------------------- selective_scan

template <typename T>
struct SelectiveArgs {
  const T *x, *dt, *A, *Bm, *Cm, *D;
  int64_t batch, length, channels, state;
  bool reverse;

  __device__ int64_t time(int64_t k) const { return time_at(k, length, reverse); }
  __device__ int64_t seq_index(int64_t n, int64_t t, int64_t c) const { return (n * length + t) * channels + c; }
  __device__ int64_t state_row(int64_t n, int64_t t) const { return (n * length + t) * state; }
};

template <typename T>
SelectiveArgs<T> selective_args(const SelectiveScanInputs& in, bool reverse) {
  return {in_ptr<T>(in.x), in_ptr<T>(in.dt), in_ptr<T>(in.A), in_ptr<T>(in.Bm), in_ptr<T>(in.Cm), in_ptr<T>(in.D),
          in.x.shape()[0], in.x.shape()[1], in.x.shape()[2], in.A.shape()[1], reverse};
}

// Scan step k of (n, c): h = exp(dt A) * h + dt x Bm (h = dt x Bm at k = 0),
// exactly as SelectiveScanCpu::advance. h holds MaxS registers, of which the
// first `state` are live; the loops are unrolled over MaxS so that h is
// indexed by constants and stays in registers.
template <typename T, int MaxS>
__device__ __forceinline__ void selective_advance(const SelectiveArgs<T>& p, int64_t n, int64_t c, int64_t k,
                                                  T (&h)[MaxS]) {
  const int64_t t = p.time(k), i = p.seq_index(n, t, c);
  const T step = p.dt[i], input = step * p.x[i];
  const T* a = p.A + c * p.state;
  const T* bt = p.Bm + p.state_row(n, t);
#pragma unroll
  for (int s = 0; s < MaxS; ++s) {
    if (s < p.state) h[s] = (k > 0 ? exp_of(step * a[s]) * h[s] : T(0)) + input * bt[s];
  }
}

// One thread per (batch, channel), consecutive threads on consecutive
// channels (coalesced x, dt, y; Bm and Cm rows are broadcast to the warp).
template <typename T, int MaxS>
__global__ void selective_forward_kernel(SelectiveArgs<T> p, T* y) {
  const int64_t task = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (task >= p.batch * p.channels) return;
  const int64_t n = task / p.channels, c = task % p.channels;
  T h[MaxS];
#pragma unroll
  for (int s = 0; s < MaxS; ++s) h[s] = T(0);
  for (int64_t k = 0; k < p.length; ++k) {
    selective_advance<T, MaxS>(p, n, c, k, h);
    const int64_t t = p.time(k), i = p.seq_index(n, t, c);
    const T* ct = p.Cm + p.state_row(n, t);
    T out = p.D[c] * p.x[i];
#pragma unroll
    for (int s = 0; s < MaxS; ++s) {
      if (s < p.state) out += ct[s] * h[s];
    }
    y[i] = out;
  }
}

// Where the backward writes, plus its scratch.
template <typename T>
struct SelectiveBackwardOut {
  T *dx, *ddt;
  T* dB_part;      // [B, groups, L, S]: dBm summed over the 32 channels of a warp (a group)
  T* dC_part;      // [B, groups, L, S]: likewise dCm
  T* dA_part;      // [B, C, S]: dA of each (batch, channel)
  T* dD_part;      // [B, C]
  T* checkpoints;  // [chunks, S, B * C]: the state entering every chunk
  T* window;       // [chunk + 1, S, B * C]: the states of the chunk being walked back
  int64_t chunk, chunks, groups;
};

// The backward needs h_{k-1} and h_k at every step k, walking k downwards,
// while the forward keeps only the current state. Storing all L states per
// (batch, channel) would cost B*C*L*S elements; instead a first forward pass
// stores the state at the start of every chunk of `chunk` ~ sqrt(L) steps,
// and the backward, chunk by chunk from the last, replays the chunk forward
// from its checkpoint into a window of chunk + 1 states and walks it back.
// Memory: B*C*S*(L/chunk + chunk + 1), and the forward is recomputed twice.
// Scratch is laid out [slot, s, B*C] so that a warp's accesses coalesce.
//
// Threads: blockIdx.y is the batch, consecutive threads take consecutive
// channels; lanes past C idle through the loops (contributing zeros) because
// the whole warp takes part in the reductions of dBm and dCm over its 32
// channels. The reverse step is SelectiveScanCpu::backward, term for term.
template <typename T, int MaxS>
__global__ void selective_backward_kernel(SelectiveArgs<T> p, const T* dy, SelectiveBackwardOut<T> q) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t n = blockIdx.y, c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t warp_first = c - lane;
  if (warp_first >= p.channels) return;  // the whole warp is past the channels
  const bool valid = c < p.channels;
  const int64_t group = warp_first / kWarpSize;
  const int64_t S = p.state, L = p.length, tasks = p.batch * p.channels, task = n * p.channels + c;
  auto slot = [&](T* base, int64_t index, int s) -> T& { return base[(index * S + s) * tasks + task]; };

  // Pass 1: recompute the forward, storing the state entering every chunk.
  T h[MaxS];
#pragma unroll
  for (int s = 0; s < MaxS; ++s) h[s] = T(0);
  if (valid) {
    for (int64_t k = 0; k < L; ++k) {
      if (k % q.chunk == 0) {
#pragma unroll
        for (int s = 0; s < MaxS; ++s) {
          if (s < S) slot(q.checkpoints, k / q.chunk, s) = h[s];
        }
      }
      selective_advance<T, MaxS>(p, n, c, k, h);
    }
  }

  // Pass 2: chunks from the last to the first.
  T dh[MaxS], dA[MaxS];  // dh: dL/dh carried backwards through the steps
#pragma unroll
  for (int s = 0; s < MaxS; ++s) dh[s] = dA[s] = T(0);
  T dD = T(0);
  const T* a = valid ? p.A + c * S : nullptr;
  for (int64_t j = q.chunks - 1; j >= 0; --j) {
    const int64_t k0 = j * q.chunk, k1 = std::min(L, k0 + q.chunk);
    if (valid) {  // window slot w holds the state after step k0 + w - 1
#pragma unroll
      for (int s = 0; s < MaxS; ++s) {
        if (s < S) slot(q.window, 0, s) = h[s] = slot(q.checkpoints, j, s);
      }
      for (int64_t k = k0; k < k1; ++k) {
        selective_advance<T, MaxS>(p, n, c, k, h);
#pragma unroll
        for (int s = 0; s < MaxS; ++s) {
          if (s < S) slot(q.window, k - k0 + 1, s) = h[s];
        }
      }
    }
    for (int64_t k = k1 - 1; k >= k0; --k) {
      const int64_t t = p.time(k), i = p.seq_index(n, t, c), w = k - k0 + 1;
      const T g = valid ? dy[i] : T(0), input = valid ? p.x[i] : T(0), step = valid ? p.dt[i] : T(0);
      const T* bt = p.Bm + p.state_row(n, t);
      const T* ct = p.Cm + p.state_row(n, t);
      T* dB_row = q.dB_part + ((n * q.groups + group) * L + t) * S;
      T* dC_row = q.dC_part + ((n * q.groups + group) * L + t) * S;
      T dx_sum = valid ? p.D[c] * g : T(0), ddt_sum = T(0);
#pragma unroll
      for (int s = 0; s < MaxS; ++s) {
        if (s < S) {  // S is uniform, so the warp stays converged for the sums
          const T h_s = valid ? slot(q.window, w, s) : T(0);
          const T prev_s = valid ? slot(q.window, w - 1, s) : T(0);
          const T a_s = valid ? a[s] : T(0);
          const T dC = warp_sum(g * h_s);
          dh[s] += g * ct[s];  // dh[s] is now the full dL/dh_t[s]
          const T decay = exp_of(step * a_s);
          if (k > 0) {
            const T d_exponent = dh[s] * prev_s * decay;  // dL/d(dt_t A[s])
            dA[s] += d_exponent * step;
            ddt_sum += d_exponent * a_s;
          }
          ddt_sum += dh[s] * bt[s] * input;
          const T dB = warp_sum(dh[s] * step * input);
          dx_sum += dh[s] * step * bt[s];
          dh[s] *= decay;  // on to dL/dh_prev
          if (lane == 0) {
            dB_row[s] = dB;
            dC_row[s] = dC;
          }
        }
      }
      if (valid) {
        q.dx[i] = dx_sum;
        q.ddt[i] = ddt_sum;
      }
      dD += g * input;
    }
  }
  if (valid) {
#pragma unroll
    for (int s = 0; s < MaxS; ++s) {
      if (s < S) q.dA_part[task * S + s] = dA[s];
    }
    q.dD_part[task] = dD;
  }
}

constexpr int kSelectiveForwardThreads = 128;
constexpr int kSelectiveBackwardThreads = 128;

template <typename T, int MaxS>
void selective_forward_launch(const SelectiveScanInputs& in, const Tensor& y, bool reverse) {
  const SelectiveArgs<T> p = selective_args<T>(in, reverse);
  selective_forward_kernel<T, MaxS>
      <<<blocks_for(p.batch * p.channels, kSelectiveForwardThreads), kSelectiveForwardThreads>>>(p, out_ptr<T>(y));
  check_launch("selective_forward_kernel");
}

template <typename T, int MaxS>
void selective_backward_launch(const SelectiveScanInputs& in, const Tensor& dy, const SelectiveScanGrads& grads,
                               bool reverse) {
  const SelectiveArgs<T> p = selective_args<T>(in, reverse);
  const int64_t B = p.batch, L = p.length, C = p.channels, S = p.state;
  check(B <= 65535, "selective_scan_backward (cuda): batch {} is above the grid's limit of 65535", B);
  int64_t chunk = 1;
  while (chunk * chunk < L) ++chunk;  // ceil(sqrt(L))
  const int64_t chunks = (L + chunk - 1) / chunk, groups = (C + kWarpSize - 1) / kWarpSize;
  Tensor dB_part = scratch(B * groups * L * S, in.x), dC_part = scratch(B * groups * L * S, in.x);
  Tensor dA_part = scratch(B * C * S, in.x), dD_part = scratch(B * C, in.x);
  Tensor checkpoints = scratch(chunks * S * B * C, in.x), window = scratch((chunk + 1) * S * B * C, in.x);
  const SelectiveBackwardOut<T> q{out_ptr<T>(grads.dx),    out_ptr<T>(grads.ddt), out_ptr<T>(dB_part),
                                  out_ptr<T>(dC_part),     out_ptr<T>(dA_part),   out_ptr<T>(dD_part),
                                  out_ptr<T>(checkpoints), out_ptr<T>(window),    chunk,
                                  chunks,                  groups};
  const dim3 grid(blocks_for(C, kSelectiveBackwardThreads), static_cast<unsigned>(B));
  selective_backward_kernel<T, MaxS><<<grid, kSelectiveBackwardThreads>>>(p, in_ptr<T>(dy), q);
  check_launch("selective_backward_kernel");
  // dBm[b] and dCm[b] sum the channel groups of batch b; dA and dD sum the batch.
  sum_rows(out_ptr<T>(dB_part), B, groups, L * S, out_ptr<T>(grads.dBm));
  sum_rows(out_ptr<T>(dC_part), B, groups, L * S, out_ptr<T>(grads.dCm));
  sum_rows(out_ptr<T>(dA_part), 1, B, C * S, out_ptr<T>(grads.dA));
  sum_rows(out_ptr<T>(dD_part), 1, B, C, out_ptr<T>(grads.dD));
}

// The register array is sized at compile time: 16 (Mamba's usual d_state)
// or 64; larger states are refused rather than spilled.
constexpr int64_t kMaxState = 64;

void check_state(const SelectiveScanInputs& in, const char* op) {
  const int64_t S = in.A.shape()[1];
  check(S <= kMaxState, "{} (cuda): the state size S = {} is above the kernel's limit of {} (it keeps the state in "
        "registers; run this op on the CPU or add a larger instantiation)", op, S, kMaxState);
}

void selective_scan_cuda(const SelectiveScanInputs& in, const Tensor& y, bool reverse) {
  check_state(in, "selective_scan");
  use_device(in.x);
  dispatch_float(in.x.dtype(), "selective_scan", [&](auto tag) {
    using T = decltype(tag);
    if (in.A.shape()[1] <= 16) {
      selective_forward_launch<T, 16>(in, y, reverse);
    } else {
      selective_forward_launch<T, kMaxState>(in, y, reverse);
    }
  });
}

void selective_scan_backward_cuda(const SelectiveScanInputs& in, const Tensor& dy, const SelectiveScanGrads& grads,
                                  bool reverse) {
  check_state(in, "selective_scan_backward");
  use_device(in.x);
  dispatch_float(in.x.dtype(), "selective_scan_backward", [&](auto tag) {
    using T = decltype(tag);
    if (in.A.shape()[1] <= 16) {
      selective_backward_launch<T, 16>(in, dy, grads, reverse);
    } else {
      selective_backward_launch<T, kMaxState>(in, dy, grads, reverse);
    }
  });
}

// --------------------------------------------------------- depthwise_conv1d

constexpr int kConvThreads = 256;

// One thread per output (n, step k, c): y = bias + sum_j w[c, j] x_{k + j - pad_left}.
template <typename T>
__global__ void conv_forward_kernel(const T* x, const T* w, const T* bias, T* y, int64_t batch, int64_t length,
                                    int64_t channels, int64_t taps, int64_t pad_left, bool reverse) {
  const int64_t total = batch * length * channels;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = idx % channels, k = idx / channels % length, n = idx / (channels * length);
    const int64_t base = n * length * channels + c;
    T out = bias ? bias[c] : T(0);
    for (int64_t j = 0; j < taps; ++j) {
      const int64_t src = k + j - pad_left;
      if (src >= 0 && src < length) out += w[c * taps + j] * x[base + time_at(src, length, reverse) * channels];
    }
    y[base + time_at(k, length, reverse) * channels] = out;
  }
}

// dx as a gather, one thread per input (n, step m, c): the outputs that read
// x_m are steps k = m - j + pad_left. Taps run downwards so the terms add up
// in the CPU's order (its scatter walks k upwards).
template <typename T>
__global__ void conv_dx_kernel(const T* w, const T* dy, T* dx, int64_t batch, int64_t length, int64_t channels,
                               int64_t taps, int64_t pad_left, bool reverse) {
  const int64_t total = batch * length * channels;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = idx % channels, m = idx / channels % length, n = idx / (channels * length);
    const int64_t base = n * length * channels + c;
    T acc = T(0);
    for (int64_t j = taps - 1; j >= 0; --j) {
      const int64_t k = m - j + pad_left;
      if (k >= 0 && k < length) acc += w[c * taps + j] * dy[base + time_at(k, length, reverse) * channels];
    }
    dx[base + time_at(m, length, reverse) * channels] = acc;
  }
}

// Per-batch partials, one thread per (n, tap j, c) walking the sequence:
// dw_part[n, c, j] = sum_k dy_k x_{k + j - pad_left}; the j = 0 threads also
// write db_part[n, c] = sum_k dy_k (when there is a bias).
template <typename T>
__global__ void conv_dweight_partial_kernel(const T* x, const T* dy, T* dw_part, T* db_part, int64_t batch,
                                            int64_t length, int64_t channels, int64_t taps, int64_t pad_left,
                                            bool reverse) {
  const int64_t total = batch * taps * channels;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = idx % channels, j = idx / channels % taps, n = idx / (channels * taps);
    const int64_t base = n * length * channels + c;
    T acc = T(0), acc_bias = T(0);
    for (int64_t k = 0; k < length; ++k) {
      const T g = dy[base + time_at(k, length, reverse) * channels];
      acc_bias += g;
      const int64_t src = k + j - pad_left;
      if (src >= 0 && src < length) acc += g * x[base + time_at(src, length, reverse) * channels];
    }
    dw_part[(n * channels + c) * taps + j] = acc;
    if (db_part && j == 0) db_part[n * channels + c] = acc_bias;
  }
}

void depthwise_conv1d_cuda(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& y,
                           int64_t pad_left, bool reverse) {
  use_device(x);
  dispatch_float(x.dtype(), "depthwise_conv1d", [&](auto tag) {
    using T = decltype(tag);
    const int64_t batch = x.shape()[0], length = x.shape()[1], channels = x.shape()[2], taps = weight.shape()[1];
    conv_forward_kernel<T><<<grid_stride_blocks(x.numel(), kConvThreads), kConvThreads>>>(
        in_ptr<T>(x), in_ptr<T>(weight), in_ptr<T>(bias), out_ptr<T>(y), batch, length, channels, taps, pad_left,
        reverse);
    check_launch("conv_forward_kernel");
  });
}

void depthwise_conv1d_backward_cuda(const Tensor& x, const Tensor& weight, const Tensor& dy, const Tensor& dx,
                                    const Tensor& dweight, const Tensor& dbias, int64_t pad_left, bool reverse) {
  use_device(x);
  dispatch_float(x.dtype(), "depthwise_conv1d_backward", [&](auto tag) {
    using T = decltype(tag);
    const int64_t batch = x.shape()[0], length = x.shape()[1], channels = x.shape()[2], taps = weight.shape()[1];
    conv_dx_kernel<T><<<grid_stride_blocks(x.numel(), kConvThreads), kConvThreads>>>(
        in_ptr<T>(weight), in_ptr<T>(dy), out_ptr<T>(dx), batch, length, channels, taps, pad_left, reverse);
    check_launch("conv_dx_kernel");
    Tensor dw_part = scratch(batch * channels * taps, x);
    Tensor db_part = dbias.defined() ? scratch(batch * channels, x) : Tensor();
    conv_dweight_partial_kernel<T><<<grid_stride_blocks(batch * taps * channels, kConvThreads), kConvThreads>>>(
        in_ptr<T>(x), in_ptr<T>(dy), out_ptr<T>(dw_part), out_ptr<T>(db_part), batch, length, channels, taps,
        pad_left, reverse);
    check_launch("conv_dweight_partial_kernel");
    sum_rows(out_ptr<T>(dw_part), 1, batch, channels * taps, out_ptr<T>(dweight));
    if (dbias.defined()) sum_rows(out_ptr<T>(db_part), 1, batch, channels, out_ptr<T>(dbias));
  });
}

}  // namespace

// Fills the CUDA side of the slots defined in scan_cpu.cpp (constant-initialised,
// so they exist before this runs).
static const bool registered = [] {
  linear_scan_kernel.cuda = &linear_scan_cuda;
  linear_scan_backward_kernel.cuda = &linear_scan_backward_cuda;
  selective_scan_kernel.cuda = &selective_scan_cuda;
  selective_scan_backward_kernel.cuda = &selective_scan_backward_cuda;
  depthwise_conv1d_kernel.cuda = &depthwise_conv1d_cuda;
  depthwise_conv1d_backward_kernel.cuda = &depthwise_conv1d_backward_cuda;
  return true;
}();

}  // namespace engine

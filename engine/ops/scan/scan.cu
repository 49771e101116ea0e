// CUDA kernels of the scan family: the contracts are in scan_kernels.h and the
// reference semantics in scan_cpu.cpp, which these kernels mirror term for
// term, so the two devices agree to rounding (gated_scan's float sigmoid to
// ~1e-6, see gate_sigmoid). Tensors arrive contiguous, [batch, length,
// channels]; element (n, t, c) is at (n * length + t) * channels + c (the
// selective scan's Bm and Cm and gated_scan's u and gate may be rows of a
// wider tensor).
//
// All the families are memory-bound streams over [B, L, C] whose inner
// dimension (channels) is contiguous, so every kernel gives consecutive
// threads consecutive channels (a warp's access to one time step is one
// contiguous run) and keeps the sequential dependency inside a thread:
//
//   linear_scan          one thread per V neighbouring channels (V = 4 floats:
//                        one 16-byte access each), walking time in tiles of
//                        kTile steps whose loads are all issued before any is
//                        used, so a thread keeps kTile loads in flight. When
//                        there are too few sequences for enough loads in
//                        flight, each is cut into spans of time, one thread
//                        each, chained through the spans' affine maps in
//                        shared memory, and take narrower packs.
//   gated_scan           the same kernel, computing each step's coefficient
//                        and input from u and the gate's logits as it goes.
//   selective_scan       a channel's states in groups of 16 (one pass per
//                        group when S is larger), each group split over two
//                        neighbouring lanes of 8 states. The forward's block
//                        (64 channels of one batch row) stages each tile's x,
//                        dt, Bm and Cm rows in shared memory (vector loads)
//                        and writes y as vectors from the lanes' partial sums
//                        left there. Steps past the sequence are identity
//                        steps (x = dt = 0), so a tile's steps are one
//                        straight run of code.
//                        A forward whose backward will run also saves the
//                        state entering every tile (1/8 of the states); the
//                        backward (a lane: 4 states of 2 channels) replays
//                        each tile from it into a shared-memory window, walks
//                        each tile back with its x, dt, dy and rows in shared
//                        memory, and reduces dBm and dCm over the warp's 16
//                        channels by shuffles, then over the block's 4 warps
//                        at the tile's end; no atomics anywhere, so the
//                        results are bit-reproducible.
//   depthwise_conv1d     one thread per (V channels, tile of kTile outputs). The
//                        backward is one fused pass per block of up to 16 taps:
//                        a thread walks a quarter of a sequence with a sliding
//                        window of dy, writing (or adding to) dx and summing
//                        dweight and dbias, which are then reduced over the
//                        block and the batch in a fixed order.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <numeric>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/elementwise/elementwise_math.h"
#include "engine/ops/scan/scan_kernels.h"

namespace engine {

namespace {

// ------------------------------------------------------------------ helpers

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kTile = 8;  // time steps whose loads a thread issues together

unsigned blocks_for(int64_t items, int64_t threads) {
  const int64_t blocks = (items + threads - 1) / threads;
  check(blocks >= 1 && blocks <= INT32_MAX, "scan (cuda): {} items is beyond one launch", items);
  return static_cast<unsigned>(blocks);
}

// Scratch memory on the tensors' device, freed with the returned Tensor (the
// caching allocator only reuses it for work queued after these kernels).
Tensor scratch(int64_t elements, const Tensor& like) { return Tensor::empty({elements}, like.dtype(), like.device()); }

// SequenceOrder::at for device code.
__device__ __forceinline__ int64_t time_at(int64_t step, int64_t length, bool reverse) {
  return reverse ? length - 1 - step : step;
}

// The widest pack (4, 2 or 1 elements) that divides the channels and keeps
// every (defined) tensor's rows aligned for it.
template <typename T>
int pack_width(int64_t channels, std::initializer_list<const Tensor*> tensors) {
  for (int width : {4, 2}) {
    bool aligned = channels % width == 0;
    for (const Tensor* t : tensors) {
      aligned = aligned && (!t->defined() || aligned_for(t->raw_data(), sizeof(T) * width));
    }
    if (aligned) return width;
  }
  return 1;
}

// Calls body(std::integral_constant<int, V>{}) for V = width (4, 2 or 1).
// float64 (gradient checks, not speed) always runs unpacked, which halves
// the instantiations to compile.
template <typename T, typename Body>
void with_pack_width(int width, const Body& body) {
  if constexpr (std::is_same_v<T, float>) {
    if (width == 4) return body(std::integral_constant<int, 4>{});
    if (width == 2) return body(std::integral_constant<int, 2>{});
  }
  body(std::integral_constant<int, 1>{});
}

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

// -------------------------------------------------------------- linear_scan

// Where a group of V channels of batch n keeps scan step k: at the first
// step's offset plus k strides (negative strides for a reverse scan).
struct SequenceView {
  int64_t first, step_stride, length;
  __device__ SequenceView(int64_t base, int64_t stride, int64_t length, bool reverse)
      : first(base + (reverse ? (length - 1) * stride : 0)), step_stride(reverse ? -stride : stride),
        length(length) {}
  SequenceView() = default;
  __device__ int64_t at_step(int64_t k) const { return first + k * step_stride; }
};

// A recurrence state_j = coef(j) * state_{j-1} + input(j), state_{-1} = 0,
// over steps j = 0..length-1, vectorised over V channels. start(...) places
// it at a thread's channel group; load(j) fetches everything step j needs and
// does nothing else (so a tile's loads are issued together, ahead of any
// arithmetic and its branches); terms(loaded) gives the step's coef and input;
// emit(j, state, loaded) writes its results.
template <typename T, int V>
struct StepTerms {
  Pack<T, V> coef, input;
};

// A channel group's place in contiguous [B, L, C] tensors.
struct ContiguousSequence {
  SequenceView seq;
  __device__ void start(int64_t n, int64_t c, int64_t length, int64_t channels, bool reverse) {
    seq = SequenceView{n * length * channels + c, channels, length, reverse};
  }
};

// Forward: step j is scan step j: h = a * h_prev + b.
template <typename T, int V>
struct LinearForwardRec : ContiguousSequence {
  using value_type = T;
  static constexpr int width = V;
  using Loaded = StepTerms<T, V>;
  const T* a;
  const T* b;
  T* h;
  __device__ Loaded load(int64_t j) const {
    const int64_t at = seq.at_step(j);
    return {load_pack<T, V>(a + at), load_pack<T, V>(b + at)};
  }
  __device__ static StepTerms<T, V> terms(const Loaded& in) { return in; }
  __device__ void emit(int64_t j, const Pack<T, V>& state, const Loaded&) const {
    store_pack(h + seq.at_step(j), state);
  }
};

// Backward: step j is scan step k = L-1-j, and the state is dL/dh_k =
// g_k + a_{k+1} dL/dh_{k+1} (no a_{k+1} for the last scan step: its coef
// multiplies the zero initial state, 0 keeps that exact). Emits db_k = dh_k
// and da_k = dh_k * h_{k-1} (h_{-1} = 0), h being the forward output.
template <typename T, int V>
struct LinearBackwardRec : ContiguousSequence {
  using value_type = T;
  static constexpr int width = V;
  struct Loaded {
    Pack<T, V> coef, input, h_prev;
  };
  const T* a;
  const T* h;
  const T* g;
  T* da;
  T* db;
  __device__ Loaded load(int64_t j) const {
    const int64_t k = seq.length - 1 - j;
    return {k + 1 < seq.length ? load_pack<T, V>(a + seq.at_step(k + 1)) : zero_pack<T, V>(),
            load_pack<T, V>(g + seq.at_step(k)), k > 0 ? load_pack<T, V>(h + seq.at_step(k - 1)) : zero_pack<T, V>()};
  }
  __device__ static StepTerms<T, V> terms(const Loaded& in) { return {in.coef, in.input}; }
  __device__ void emit(int64_t j, const Pack<T, V>& dh, const Loaded& in) const {
    const int64_t at = seq.at_step(seq.length - 1 - j);
    Pack<T, V> grad_a;
#pragma unroll
    for (int i = 0; i < V; ++i) grad_a.v[i] = dh.v[i] * in.h_prev.v[i];
    store_pack(db + at, dh);
    store_pack(da + at, grad_a);
  }
};

// gated_scan's inputs at a channel group: u and gate rows at their own
// stride, keep one value per step (or none); outputs contiguous.
template <typename T, int V>
struct GatedInputs : ContiguousSequence {
  // Scan step k's inputs as loaded.
  struct Raw {
    Pack<T, V> u, gate;
    T keep;
  };
  const T* u;
  const T* gate;
  const T* keep;  // null: no mask
  int64_t row_stride;
  SequenceView rows, keeps;
  __device__ void start(int64_t n, int64_t c, int64_t length, int64_t channels, bool reverse) {
    ContiguousSequence::start(n, c, length, channels, reverse);
    rows = SequenceView{n * length * row_stride + c, row_stride, length, reverse};
    keeps = SequenceView{n * length, 1, length, reverse};
  }
  __device__ Raw raw_at(int64_t k) const {
    return {load_pack<T, V>(u + rows.at_step(k)), load_pack<T, V>(gate + rows.at_step(k)),
            keep ? keep[keeps.at_step(k)] : T(1)};
  }
  __device__ StepGate<T> gate_of(const Raw& in, int i) const { return step_gate(in.gate.v[i], in.keep, keep != nullptr); }
};

// gated_scan's forward: step j is scan step j, h = a h_prev + w u.
template <typename T, int V>
struct GatedForwardRec : GatedInputs<T, V> {
  using value_type = T;
  static constexpr int width = V;
  using Loaded = typename GatedInputs<T, V>::Raw;
  T* h;
  __device__ Loaded load(int64_t j) const { return this->raw_at(j); }
  __device__ StepTerms<T, V> terms(const Loaded& in) const {
    StepTerms<T, V> out;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const StepGate<T> step = this->gate_of(in, i);
      out.coef.v[i] = step.a, out.input.v[i] = step.w * in.u.v[i];
    }
    return out;
  }
  __device__ void emit(int64_t j, const Pack<T, V>& state, const Loaded&) const {
    store_pack(h + this->seq.at_step(j), state);
  }
};

// gated_scan's backward: step j is scan step k = L-1-j, the state dL/dh_k =
// g_k + a_{k+1} dL/dh_{k+1} (a_{k+1} = 0 past the last step, as in
// LinearBackwardRec). Emits du_k = dh_k w_k and
// dgate_k = dh_k (h_{k-1} - u_k) keep_k s_k (1 - s_k).
template <typename T, int V>
struct GatedBackwardRec : GatedInputs<T, V> {
  using value_type = T;
  static constexpr int width = V;
  using Raw = typename GatedInputs<T, V>::Raw;
  struct Loaded {
    Raw here, next;  // scan steps k and k + 1 (a zero gate past the last step)
    Pack<T, V> grad, h_prev;
    bool last;
  };
  const T* h;
  const T* g;
  T* du;
  T* dgate;
  __device__ Loaded load(int64_t j) const {
    const int64_t k = this->seq.length - 1 - j;
    const bool last = k + 1 == this->seq.length;
    return {this->raw_at(k), last ? Raw{} : this->raw_at(k + 1), load_pack<T, V>(g + this->seq.at_step(k)),
            k > 0 ? load_pack<T, V>(h + this->seq.at_step(k - 1)) : zero_pack<T, V>(), last};
  }
  __device__ StepTerms<T, V> terms(const Loaded& in) const {
    StepTerms<T, V> out{zero_pack<T, V>(), in.grad};
    if (!in.last) {
#pragma unroll
      for (int i = 0; i < V; ++i) out.coef.v[i] = this->gate_of(in.next, i).a;
    }
    return out;
  }
  __device__ void emit(int64_t j, const Pack<T, V>& dh, const Loaded& in) const {
    const int64_t at = this->seq.at_step(this->seq.length - 1 - j);
    Pack<T, V> grad_u, grad_gate;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const StepGate<T> step = this->gate_of(in.here, i);
      grad_u.v[i] = dh.v[i] * step.w;
      grad_gate.v[i] = dh.v[i] * (in.h_prev.v[i] - in.here.u.v[i]) * in.here.keep * step.s * (T(1) - step.s);
    }
    store_pack(du + at, grad_u);
    store_pack(dgate + at, grad_gate);
  }
};

template <typename T, int V>
__device__ __forceinline__ void recurrence_step(Pack<T, V>& state, const Pack<T, V>& coef, const Pack<T, V>& input) {
#pragma unroll
  for (int i = 0; i < V; ++i) state.v[i] = coef.v[i] * state.v[i] + input.v[i];
}

// A chunk of steps maps its incoming state s to A * s + H (A the product of
// its coefs, H its result from a zero state).
template <typename T, int V>
struct AffineMap {
  Pack<T, V> A, H;
};

// Walks steps [begin, end) in tiles: the tile's loads first, then
// step(j, loaded) on each in order, so a thread keeps kTile loads in flight.
template <typename Rec, typename Step>
__device__ __forceinline__ void walk_steps(const Rec& rec, int64_t begin, int64_t end, const Step& step) {
  for (int64_t j0 = begin; j0 < end; j0 += kTile) {
    typename Rec::Loaded tile[kTile];
#pragma unroll
    for (int u = 0; u < kTile; ++u) {
      if (j0 + u < end) tile[u] = rec.load(j0 + u);
    }
#pragma unroll
    for (int u = 0; u < kTile; ++u) {
      if (j0 + u < end) step(j0 + u, tile[u]);
    }
  }
}

constexpr int kLinearScanBlock = 256;

// One thread per (group of V neighbouring channels of one batch row, span of
// time). A block holds kLinearScanBlock / spans channel groups, consecutive
// (a warp's access to one step is contiguous runs), times `spans` spans of
// ceil(length / spans) consecutive steps. With one span a thread walks the
// whole sequence. With more (too few sequences to keep enough loads in
// flight), each thread first walks its span for the span's map, the block
// shares the maps in shared memory, and each thread composes the maps of the
// spans before its own into its incoming state, then walks its span again
// (reading what the first walk brought into L2) and emits.
template <typename Rec>
__global__ void __launch_bounds__(kLinearScanBlock)
    linear_scan_span_kernel(Rec rec, int64_t batch, int64_t length, int64_t channels, bool reverse, int spans) {
  using T = typename Rec::value_type;
  constexpr int V = Rec::width;
  __shared__ AffineMap<T, V> span_maps[kLinearScanBlock];
  const int groups_per_block = kLinearScanBlock / spans;
  const int local = threadIdx.x % groups_per_block, span = threadIdx.x / groups_per_block;
  const int64_t groups = channels / V, group = blockIdx.x * static_cast<int64_t>(groups_per_block) + local;
  const bool valid = group < batch * groups;  // the others still take part in the barrier
  const int64_t n = group / groups, c = group % groups * V;
  rec.start(n, c, length, channels, reverse);
  const int64_t span_steps = (length + spans - 1) / spans;
  const int64_t begin = std::min(length, span * span_steps), end = valid ? std::min(length, begin + span_steps) : 0;

  Pack<T, V> state = zero_pack<T, V>();
  if (spans > 1) {
    AffineMap<T, V> map{zero_pack<T, V>(), zero_pack<T, V>()};
#pragma unroll
    for (int i = 0; i < V; ++i) map.A.v[i] = T(1);  // an empty span is the identity
    walk_steps(rec, begin, end, [&](int64_t, const typename Rec::Loaded& in) {
      const StepTerms<T, V> step = rec.terms(in);
#pragma unroll
      for (int i = 0; i < V; ++i) map.A.v[i] *= step.coef.v[i];
      recurrence_step(map.H, step.coef, step.input);
    });
    span_maps[threadIdx.x] = map;
    __syncthreads();
    for (int earlier = 0; earlier < span; ++earlier) {
      const AffineMap<T, V>& m = span_maps[earlier * groups_per_block + local];
      recurrence_step(state, m.A, m.H);
    }
  }
  walk_steps(rec, begin, end, [&](int64_t j, const typename Rec::Loaded& in) {
    const StepTerms<T, V> step = rec.terms(in);
    recurrence_step(state, step.coef, step.input);
    rec.emit(j, state, in);
  });
}

// Threads (one chain of steps each) from which a scan keeps enough loads in
// flight to stream at the copy's rate; fewer sequences are cut into spans.
constexpr int64_t kLinearScanMinThreads = 16384;

// Spans per sequence: doubled while the threads are too few, up to 32 and
// while a span keeps at least a tile of steps.
int linear_scan_spans(int64_t sequences, int64_t length) {
  int spans = 1;
  while (spans < 32 && sequences * spans < kLinearScanMinThreads && length >= 2 * spans * kTile) spans *= 2;
  return spans;
}

// The widest pack up to `widest` that still gives kLinearScanMinThreads
// threads, else 1: a short scan over few sequences (batch 1) then has more
// threads with less serial work each (H200, the gated_rnn hybrid at batch 1,
// graph replays: 0.528 -> 0.517 ms).
int linear_scan_width(int widest, int64_t batch, int64_t length, int64_t channels) {
  for (int width = widest; width > 1; width /= 2) {
    const int64_t sequences = batch * channels / width;
    if (sequences * linear_scan_spans(sequences, length) >= kLinearScanMinThreads) return width;
  }
  return 1;
}

// make_rec(std::integral_constant<int, V>) builds the recurrence for packs of
// V (at most `width`, which the tensors allow).
template <typename T, typename MakeRec>
void launch_linear_scan(const Tensor& a, int width, bool reverse, const MakeRec& make_rec) {
  const int64_t batch = a.shape()[0], length = a.shape()[1], channels = a.shape()[2];
  with_pack_width<T>(linear_scan_width(width, batch, length, channels), [&](auto V) {
    const int64_t sequences = batch * channels / V;
    const int spans = linear_scan_spans(sequences, length);
    linear_scan_span_kernel<<<blocks_for(sequences, kLinearScanBlock / spans), kLinearScanBlock, 0, current_stream()>>>(
        make_rec(V), batch, length, channels, reverse, spans);
    CUDA_CHECK_LAUNCH();
  });
}

void linear_scan_cuda(const Tensor& a, const Tensor& b, const Tensor& h, bool reverse) {
  DeviceGuard guard(a);
  dispatch_float(a.dtype(), "linear_scan", [&](auto tag) {
    using T = decltype(tag);
    const int width = pack_width<T>(a.shape()[2], {&a, &b, &h});
    launch_linear_scan<T>(a, width, reverse, [&](auto V) {
      return LinearForwardRec<T, decltype(V)::value>{{}, data_or_null<const T>(a), data_or_null<const T>(b), data_or_null<T>(h)};
    });
  });
}

void linear_scan_backward_cuda(const Tensor& a, const Tensor& h, const Tensor& g, const Tensor& da, const Tensor& db,
                               bool reverse) {
  DeviceGuard guard(a);
  dispatch_float(a.dtype(), "linear_scan_backward", [&](auto tag) {
    using T = decltype(tag);
    const int width = pack_width<T>(a.shape()[2], {&a, &h, &g, &da, &db});
    launch_linear_scan<T>(a, width, reverse, [&](auto V) {
      return LinearBackwardRec<T, decltype(V)::value>{
          {}, data_or_null<const T>(a), data_or_null<const T>(h), data_or_null<const T>(g), data_or_null<T>(da),
          data_or_null<T>(db)};
    });
  });
}

// gated_scan's packs must also divide u's and gate's row stride.
template <typename T>
int gated_pack_width(const GatedScanInputs& in, std::initializer_list<const Tensor*> outputs) {
  const int64_t channels = in.u.shape()[2];
  const int width = pack_width<T>(std::gcd(channels, in.row_stride()), {&in.u, &in.gate});
  return std::min(width, pack_width<T>(channels, outputs));
}

template <typename T, int V>
GatedInputs<T, V> gated_inputs(const GatedScanInputs& in) {
  return {{}, data_or_null<const T>(in.u), data_or_null<const T>(in.gate), data_or_null<const T>(in.keep),
          in.row_stride(), {}, {}};
}

void gated_scan_cuda(const GatedScanInputs& in, const Tensor& h, bool reverse) {
  DeviceGuard guard(h);
  dispatch_float(h.dtype(), "gated_scan", [&](auto tag) {
    using T = decltype(tag);
    launch_linear_scan<T>(h, gated_pack_width<T>(in, {&h}), reverse, [&](auto V) {
      return GatedForwardRec<T, decltype(V)::value>{gated_inputs<T, decltype(V)::value>(in), data_or_null<T>(h)};
    });
  });
}

void gated_scan_backward_cuda(const GatedScanInputs& in, const Tensor& h, const Tensor& g, const Tensor& du,
                              const Tensor& dgate, bool reverse) {
  DeviceGuard guard(h);
  dispatch_float(h.dtype(), "gated_scan_backward", [&](auto tag) {
    using T = decltype(tag);
    launch_linear_scan<T>(h, gated_pack_width<T>(in, {&h, &g, &du, &dgate}), reverse, [&](auto V) {
      return GatedBackwardRec<T, decltype(V)::value>{gated_inputs<T, decltype(V)::value>(in), data_or_null<const T>(h),
                                                     data_or_null<const T>(g), data_or_null<T>(du),
                                                     data_or_null<T>(dgate)};
    });
  });
}

// ----------------------------------------------------------- selective_scan

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

// --------------------------------------------------------- depthwise_conv1d

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

// Fills the CUDA side of the slots defined in scan_cpu.cpp (constant-initialised,
// so they exist before this runs).
static const bool registered = [] {
  linear_scan_kernel.cuda = &linear_scan_cuda;
  linear_scan_backward_kernel.cuda = &linear_scan_backward_cuda;
  gated_scan_kernel.cuda = &gated_scan_cuda;
  gated_scan_backward_kernel.cuda = &gated_scan_backward_cuda;
  selective_scan_kernel.cuda = &selective_scan_cuda;
  selective_scan_backward_kernel.cuda = &selective_scan_backward_cuda;
  depthwise_conv1d_kernel.cuda = &depthwise_conv1d_cuda;
  depthwise_conv1d_backward_kernel.cuda = &depthwise_conv1d_backward_cuda;
  return true;
}();

}  // namespace engine

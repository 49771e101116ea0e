// CUDA kernels of the linear recurrences, linear_scan and gated_scan: the
// contracts are in scan_kernels.h and the reference semantics in scan_cpu.cpp,
// which these kernels mirror, so the two devices agree to rounding
// (gated_scan's float sigmoid to ~1e-6, see gate_sigmoid; its backward
// carries a_k dL/dh_k rather than dL/dh_k, see GatedBackwardRec). Tensors
// arrive contiguous, [batch, length, channels]; element (n, t, c) is at
// (n * length + t) * channels + c (gated_scan's u and gate may be rows of a
// wider tensor).
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
//                        and input from u and the gate's logits as it goes,
//                        with narrower packs before spans
//                        (narrow_first_layout); its backward, and its
//                        forward in spans, walk half tiles.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <numeric>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/scan/scan_kernels.h"
#include "engine/ops/scan/sequence_cuda.cuh"

namespace engine {

namespace {

using namespace sequence;  // the sequence ops' shared helpers

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
// over steps j = 0..length-1, vectorised over V channels. A Rec names its
// value_type, its width V, its tile_steps (the steps whose loads walk_steps
// issues together) and its Loaded step; start(...) places it at a thread's
// channel group; load(j) fetches everything step j needs and does nothing
// else (so a tile's loads are issued together, ahead of any arithmetic and
// its branches); terms(loaded) gives the step's coef and input;
// emit(j, before, state, loaded) writes its results from the states before
// and after the step.
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
  static constexpr int tile_steps = kTile;
  using Loaded = StepTerms<T, V>;
  const T* a;
  const T* b;
  T* h;
  __device__ Loaded load(int64_t j) const {
    const int64_t at = seq.at_step(j);
    return {load_pack<T, V>(a + at), load_pack<T, V>(b + at)};
  }
  __device__ static StepTerms<T, V> terms(const Loaded& in) { return in; }
  __device__ void emit(int64_t j, const Pack<T, V>&, const Pack<T, V>& state, const Loaded&) const {
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
  static constexpr int tile_steps = kTile;
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
  __device__ void emit(int64_t j, const Pack<T, V>&, const Pack<T, V>& dh, const Loaded& in) const {
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

// gated_scan's forward: step j is scan step j, h = a h_prev + w u, walked in
// tiles of kSteps (see gated_scan_cuda).
template <typename T, int V, int kSteps>
struct GatedForwardRec : GatedInputs<T, V> {
  using value_type = T;
  static constexpr int width = V;
  static constexpr int tile_steps = kSteps;
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
  __device__ void emit(int64_t j, const Pack<T, V>&, const Pack<T, V>& state, const Loaded&) const {
    store_pack(h + this->seq.at_step(j), state);
  }
};

// gated_scan's backward: step j is scan step k = L-1-j. dL/dh_k =
// g_k + a_{k+1} dL/dh_{k+1} needs the next step's coefficient, so the state
// carried is e_k = a_k dL/dh_k instead: e_k = a_k e_{k+1} + a_k g_k (e_L = 0)
// takes only step k's own inputs, and dL/dh_k = g_k + e_{k+1} is g plus the
// state before the step. (Carrying dL/dh_k itself meant loading step k + 1's
// u and gate and computing its sigmoid again at every step: 255 registers for
// packs of 4 floats; H200 at [128, 197, 768]: 0.194 -> 0.186 ms.) Emits
// du_k = dh_k w_k and dgate_k = dh_k (h_{k-1} - u_k) keep_k s_k (1 - s_k).
template <typename T, int V>
struct GatedBackwardRec : GatedInputs<T, V> {
  using value_type = T;
  static constexpr int width = V;
  // Half a tile: its loads are as many registers as linear_scan's whole
  // tile (the H200 at [256, 65, 96]: 0.0173 -> 0.0167 ms alone).
  static constexpr int tile_steps = kTile / 2;
  struct Loaded {
    typename GatedInputs<T, V>::Raw here;  // scan step k's u, gate and keep
    Pack<T, V> grad, h_prev;
  };
  const T* h;
  const T* g;
  T* du;
  T* dgate;
  __device__ Loaded load(int64_t j) const {
    const int64_t k = this->seq.length - 1 - j;
    return {this->raw_at(k), load_pack<T, V>(g + this->seq.at_step(k)),
            k > 0 ? load_pack<T, V>(h + this->seq.at_step(k - 1)) : zero_pack<T, V>()};
  }
  // terms and emit both take the step's gate from gate_of, which the compiler
  // computes once (one ex2 per element and step in the PTX).
  __device__ StepTerms<T, V> terms(const Loaded& in) const {
    StepTerms<T, V> out;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      out.coef.v[i] = this->gate_of(in.here, i).a;
      out.input.v[i] = out.coef.v[i] * in.grad.v[i];
    }
    return out;
  }
  // next_e: e_{k+1}, the state before the step.
  __device__ void emit(int64_t j, const Pack<T, V>& next_e, const Pack<T, V>&, const Loaded& in) const {
    const int64_t at = this->seq.at_step(this->seq.length - 1 - j);
    Pack<T, V> grad_u, grad_gate;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const StepGate<T> step = this->gate_of(in.here, i);
      const T dh = in.grad.v[i] + next_e.v[i];
      grad_u.v[i] = dh * step.w;
      grad_gate.v[i] = dh * (in.h_prev.v[i] - in.here.u.v[i]) * in.here.keep * step.s * (T(1) - step.s);
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

// Walks steps [begin, end) in tiles of Rec::tile_steps: the tile's loads
// first, then step(j, loaded) on each in order, so a thread keeps a tile's
// loads in flight.
template <typename Rec, typename Step>
__device__ __forceinline__ void walk_steps(const Rec& rec, int64_t begin, int64_t end, const Step& step) {
  constexpr int kSteps = Rec::tile_steps;
  for (int64_t j0 = begin; j0 < end; j0 += kSteps) {
    typename Rec::Loaded tile[kSteps];
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      if (j0 + u < end) tile[u] = rec.load(j0 + u);
    }
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
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
    const Pack<T, V> before = state;
    recurrence_step(state, step.coef, step.input);
    rec.emit(j, before, state, in);
  });
}

// Threads (one chain of steps each) from which a scan keeps enough loads in
// flight to stream at the copy's rate; fewer sequences are cut into spans.
constexpr int64_t kLinearScanMinThreads = 16384;

// How a scan is laid out: packs of `width` channels per thread, each sequence
// cut into `spans` spans of time.
struct ScanLayout {
  int width, spans;
};

// Spans per sequence: doubled while the threads are too few, up to 32 and
// while a span keeps at least kTile steps (whatever tile the Rec walks).
int scan_spans(int64_t sequences, int64_t length, int64_t min_threads) {
  int spans = 1;
  while (spans < 32 && sequences * spans < min_threads && length >= 2 * spans * kTile) spans *= 2;
  return spans;
}

// The widest pack up to `widest` that gives min_threads threads, spans
// counted, else single channels in as many spans as they need.
ScanLayout widest_with_spans(int widest, int64_t batch, int64_t length, int64_t channels, int64_t min_threads) {
  for (int width = widest; width > 1; width /= 2) {
    const int64_t sequences = batch * channels / width;
    const int spans = scan_spans(sequences, length, min_threads);
    if (sequences * spans >= min_threads) return {width, spans};
  }
  return {1, scan_spans(batch * channels, length, min_threads)};
}

// Where sequences must be cut into spans: the widest pack that reaches four
// times kLinearScanMinThreads with spans (at most 32, each at least kTile
// steps long), else narrower, since each span walks its steps twice. H200,
// the default job's [256, 65, 96], where 65 steps allow 8 spans: pairs in 8
// spans instead of packs of 4 in 4 (linear_scan) or 8 (gated_scan's
// backward): linear_scan's forward 0.0074 -> 0.0072 ms, its backward 0.0119
// -> 0.0098, gated_scan's forward (in half tiles, packs of 4 in 4 spans)
// 0.0100 -> 0.0084, its backward 0.0138 -> 0.0124. No other shape with spans
// is measured.
constexpr int64_t kFewSequencesMinThreads = 4 * kLinearScanMinThreads;

ScanLayout few_sequences_layout(int widest, int64_t batch, int64_t length, int64_t channels) {
  return widest_with_spans(widest, batch, length, channels, kFewSequencesMinThreads);
}

// linear_scan's kernels: the widest packs, one span, while that gives
// kLinearScanMinThreads threads; else few_sequences_layout. A short scan over
// few sequences (batch 1) then has more threads with less serial work each
// (H200, the gated_rnn hybrid at batch 1 when gated_scan took spans first,
// graph replays: 0.528 -> 0.517 ms).
ScanLayout linear_layout(int widest, int64_t batch, int64_t length, int64_t channels) {
  const ScanLayout streaming = widest_with_spans(widest, batch, length, channels, kLinearScanMinThreads);
  return streaming.spans == 1 ? streaming : few_sequences_layout(widest, batch, length, channels);
}

// gated_scan's kernels need twice linear_scan's threads even over many
// sequences. They take them from narrower packs in one span first, since
// spans read their inputs twice, and only when even single channels are too
// few (below 32,768 channel rows) from few_sequences_layout. H200, at
// [128, 197, 768]: the backward (tiles of 4) in packs of 4 in one span (5.8
// warps per SM) 0.186 ms, in 2 spans 0.209 ms, pairs in one span 0.171 ms,
// single channels 0.178 ms; the forward in packs of 4 0.0660 ms, in pairs
// 0.0638.
constexpr int64_t kGatedMinThreads = 2 * kLinearScanMinThreads;

ScanLayout narrow_first_layout(int widest, int64_t batch, int64_t length, int64_t channels) {
  for (int width = widest; width >= 1; width /= 2) {
    if (batch * channels / width >= kGatedMinThreads) return {width, 1};
  }
  return few_sequences_layout(widest, batch, length, channels);
}

using ScanLayoutRule = ScanLayout (*)(int widest, int64_t batch, int64_t length, int64_t channels);

// The layout `rule` gives a scan over [B, L, C] tensors like `a` whose packs
// may be up to `widest` channels wide.
template <typename T>
ScanLayout scan_layout(ScanLayoutRule rule, int widest, const Tensor& a) {
  // float64 runs unpacked (with_pack_width), so its layout is chosen for single channels.
  return rule(std::is_same_v<T, float> ? widest : 1, a.shape()[0], a.shape()[1], a.shape()[2]);
}

// make_rec(std::integral_constant<int, V>) builds the recurrence for packs of
// V = layout.width.
template <typename T, typename MakeRec>
void launch_linear_scan(const Tensor& a, const ScanLayout& layout, bool reverse, const MakeRec& make_rec) {
  const int64_t batch = a.shape()[0], length = a.shape()[1], channels = a.shape()[2];
  with_pack_width<T>(layout.width, [&](auto V) {
    const int64_t sequences = batch * channels / V;
    linear_scan_span_kernel<<<blocks_for(sequences, kLinearScanBlock / layout.spans), kLinearScanBlock, 0,
                              current_stream()>>>(make_rec(V), batch, length, channels, reverse, layout.spans);
    CUDA_CHECK_LAUNCH();
  });
}

void linear_scan_cuda(const Tensor& a, const Tensor& b, const Tensor& h, bool reverse) {
  DeviceGuard guard(a);
  dispatch_float(a.dtype(), "linear_scan", [&](auto tag) {
    using T = decltype(tag);
    const int width = pack_width<T>(a.shape()[2], {&a, &b, &h});
    launch_linear_scan<T>(a, scan_layout<T>(linear_layout, width, a), reverse, [&](auto V) {
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
    launch_linear_scan<T>(a, scan_layout<T>(linear_layout, width, a), reverse, [&](auto V) {
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
    const ScanLayout layout = scan_layout<T>(narrow_first_layout, gated_pack_width<T>(in, {&h}), h);
    const auto launch = [&](auto tile) {
      launch_linear_scan<T>(h, layout, reverse, [&](auto V) {
        return GatedForwardRec<T, decltype(V)::value, decltype(tile)::value>{gated_inputs<T, decltype(V)::value>(in),
                                                                            data_or_null<T>(h)};
      });
    };
    // Layouts with spans walk half tiles, whose registers leave room for the
    // threads that spans need; one span streams better in whole tiles. H200,
    // pairs: [256, 65, 96] in 8 spans 0.0115 -> 0.0084 ms in half tiles;
    // [128, 197, 768] in one span 0.064 -> 0.073 ms.
    if (layout.spans > 1) {
      launch(std::integral_constant<int, kTile / 2>{});
    } else {
      launch(std::integral_constant<int, kTile>{});
    }
  });
}

void gated_scan_backward_cuda(const GatedScanInputs& in, const Tensor& h, const Tensor& g, const Tensor& du,
                              const Tensor& dgate, bool reverse) {
  DeviceGuard guard(h);
  dispatch_float(h.dtype(), "gated_scan_backward", [&](auto tag) {
    using T = decltype(tag);
    const int widest = gated_pack_width<T>(in, {&h, &g, &du, &dgate});
    launch_linear_scan<T>(h, scan_layout<T>(narrow_first_layout, widest, h), reverse, [&](auto V) {
      return GatedBackwardRec<T, decltype(V)::value>{gated_inputs<T, decltype(V)::value>(in), data_or_null<const T>(h),
                                                     data_or_null<const T>(g), data_or_null<T>(du),
                                                     data_or_null<T>(dgate)};
    });
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
  return true;
}();

}  // namespace engine

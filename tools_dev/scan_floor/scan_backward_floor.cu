// The arithmetic floor of the selective scan's backward on a GPU: a kernel that
// does only the backward's arithmetic at the bench row's shape ([B, L, C] =
// [128, 197, 384], S = 16) and loads no input, timed at several layouts and
// reported as the GB/s that the real kernel's bytes (x, dt, dy, dx, ddt of
// [B, L, C]; Bm, Cm, dBm, dCm of [B, L, S]: 200.1 MB) would give at that time.
//
// The model is the cheapest backward that does not store every state: time
// in tiles of T steps; each tile is replayed forward from its entering state
// (a real kernel's checkpoint) keeping the tile's decays a_t and entering
// states h_{t-1} in registers, then walked back. Per (step, channel, state)
// that is, with sa = A log2(e) and b, c the rows Bm_t, Cm_t:
//   replay (5): FMUL dt sa, MUFU.EX2 (a, the one exponential), FMUL (dt x) b,
//     FFMA h = a h + that, FFMA dCm's term dy h (dy is known in the replay,
//     so the state after the tile's last step need not be kept)
//   walk back (7): FFMA dh += c dy, FFMA dhB += dh b (dx's and ddt's sum),
//     FFMA dBm's term dh (dt x), FMUL dh *= a (on to dL/dh_{t-1}),
//     FMUL r = dh h_{t-1}, FFMA dA += r dt, FFMA ddt's sum += r sa
// and per channel-step: dx = dt dhB, ddt = x dhB + ln2 (sum r sa), one store
// of each (D's terms, per channel-step, are left out as in the forward floor).
// Bm and Cm are immediates and x, dt, dy are advanced in registers from a
// seed read once; A is per channel, in registers. Nothing else is loaded:
// no checkpoint (the tile that follows in the loop enters from the state
// after this tile's first step, which is in registers anyway), and the tiles
// run front to back, dh carried from one to the next, the same arithmetic.
//
// dBm and dCm are summed over channels ([B, L, S] rows shared by all C). Two
// variants: "no reduction" (a strict lower bound) adds a lane's terms into
// one running sum per state (dBm's and dCm's alike: the sum only keeps the
// work alive), stored once at the end; "warp sums" sums each step's terms
// over the warp's channels with shuffles (halving butterflies: a lane's N
// values of one kind over the 2 N lanes that hold the same states take N
// shuffles, not N log2(2 N); each (step, state) total ends in two lanes, one
// of which writes it to the warp's row in shared memory), the least any real
// kernel must do before its cross-warp sums.
//
// Layouts: kLanes lanes per channel (16 / kLanes states per lane; dx's and
// ddt's parts summed over them by shuffles) and kLaneChannels channels per
// lane (their dBm and dCm terms added in registers before any shuffle, as the
// engine's kernel does with 4 lanes x 2 channels), at T = 2, 4 and 8. Each
// kernel's launch bounds ask for the most blocks per SM at which ptxas does
// not spill (one wave needs 3 blocks of 128 threads per SM at 1 lane per
// channel or 2 x 2, 6 at 2 x 1 or 4 x 2, 12 at 4 x 1); the registers are
// listed in main(). A kernel that spills anyway (local memory, another
// compiler) is no floor: the program skips it.
//
// It also measures the copy ceiling (cudaMemcpy, device to device) and the
// MUFU's exp2 rate in the same run, prints the time of the 60% bar and the
// exp floor (B L C S exponentials at that rate), checks every variant's dx
// and ddt for a few channels against a double-precision CPU run of the same
// synthetic recurrence, and ends with the best variant of each kind.
//
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -o scan_backward_floor scan_backward_floor.cu && ./scan_backward_floor
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

namespace {

constexpr int kBatch = 128, kLength = 197, kChannels = 384, kStates = 16;
constexpr int kTasks = kBatch * kChannels;  // (batch, channel) pairs
constexpr int kPlane = kTasks * kLength;    // elements of one [B, L, C] tensor
constexpr int kThreads = 128, kWarp = 32, kWarps = kThreads / kWarp;
constexpr int kSeeds = 1024;
constexpr float kLn2 = 0.693147181f;
constexpr double kRowBytes = 4.0 * (5.0 * kPlane + 4.0 * kBatch * kLength * kStates);  // the bench row's bytes

// ---------------------------------------------------------------- inputs
// The synthetic inputs, shared by the kernels and the CPU reference. Bm and
// Cm depend on a lane's own state index i only (compile-time constants, as
// in the forward floor); A on the channel too, so that a lane's channels
// cannot share its registers.
__host__ __device__ inline float seed_of(int i) { return 0.25f + 0.5f * static_cast<float>(i) / kSeeds; }
__host__ __device__ inline float scaled_a_of(int task, int s) {  // A log2(e), A = -(s + 1) / 10 scaled per channel
  return -0.14426950408889634f * static_cast<float>(1 + s) * (1.0f + 0.125f * static_cast<float>(task % 4));
}
__host__ __device__ constexpr float b_of(int i) { return 0.01f * static_cast<float>(i + 1); }
__host__ __device__ constexpr float c_of(int i) { return 0.02f * static_cast<float>(i + 1); }

// A channel's x, dt and dy, advanced by one FFMA each per step (exact fmaf
// on both sides, so the CPU sees the kernel's very inputs).
struct StepInputs {
  float x, dt, dy;
  __host__ __device__ void start(float seed) {
    x = seed;
    dt = fmaf(1e-3f, seed, 0.05f);
    dy = fmaf(-0.25f, seed, 0.5f);
  }
  __host__ __device__ void advance() {
    x = fmaf(x, 0.998f, 1e-3f);
    dt = fmaf(dt, 0.999f, 1e-4f);
    dy = fmaf(dy, 0.997f, 1e-3f);
  }
};

// ---------------------------------------------------------------- warp sums
// transposed_sum<kCount, kMask, kLow> sums each of v[0 .. kCount) over the
// lanes whose indices differ only in bits kMask, kMask / 2, ..., kLow. While a
// lane holds more than one value, a stage halves them: the lane sends one half
// to its partner across the stage's bit and adds the partner's copy of the
// other half (one shuffle per pair of values instead of one per value); with
// one value left, a stage is a plain butterfly. The lane ends with held()
// totals in v[0 ..]: values slot() .. slot() + held() - 1, and the lanes that
// differ only in the plain stages' bits hold the same ones (writer(): one of them).
template <int kCount, int kMask, int kLow>
__device__ __forceinline__ void transposed_sum(float* v, int lane) {
  if constexpr (kMask >= kLow && kMask > 0) {
    if constexpr (kCount > 1) {
      constexpr int kHalf = kCount / 2;
      const bool upper = lane & kMask;
#pragma unroll
      for (int i = 0; i < kHalf; ++i) {
        const float send = upper ? v[i] : v[i + kHalf];
        const float keep = upper ? v[i + kHalf] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, kMask);
      }
      transposed_sum<kHalf, kMask / 2, kLow>(v, lane);
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], kMask);
      transposed_sum<1, kMask / 2, kLow>(v, lane);
    }
  }
}

// Which of transposed_sum<kCount, kMask, kLow>'s totals a lane ends with.
template <int kCount, int kMask, int kLow>
struct Transposed {
  static constexpr bool kDone = !(kMask >= kLow && kMask > 0);
  using Next = Transposed<(kCount > 1 ? kCount / 2 : 1), kMask / 2, kLow>;
  __host__ __device__ static constexpr int held() {
    if constexpr (kDone) {
      return kCount;
    } else {
      return Next::held();
    }
  }
  __device__ static int slot(int lane) {
    if constexpr (kDone) {
      return 0;
    } else {
      return (kCount > 1 && (lane & kMask) ? kCount / 2 : 0) + Next::slot(lane);
    }
  }
  __device__ static bool writer(int lane) {
    if constexpr (kDone) {
      return true;
    } else {
      return (kCount > 1 || !(lane & kMask)) && Next::writer(lane);
    }
  }
};

// The MUFU's 2^t (not volatile: a pure function whose every result is used).
__device__ __forceinline__ float ex2(float t) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(t));
  return r;
}

// sum = a b, or sum + a b: a sum's first term is a product, not an FFMA with 0.
template <bool kFirst>
__device__ __forceinline__ void add_product(float& sum, float a, float b) {
  sum = kFirst ? a * b : fmaf(a, b, sum);
}

// ---------------------------------------------------------------- the kernel
// One thread's share: states part N .. part N + N - 1 of kLaneChannels
// neighbouring channels (value v = e N + i: channel e, state i of the lane).
template <int kLanes, int kLaneChannels, bool kWarpSums>
struct Lane {
  static constexpr int N = kStates / kLanes, E = kLaneChannels, V = E * N;
  static constexpr int kAllThreads = kTasks / E * kLanes;
  // dx and ddt (2 E values per lane) summed over the channel's kLanes lanes.
  using ChannelSum = Transposed<2 * E, kLanes / 2, 1>;
  // dBm's or dCm's terms of the lane's N states summed over the warp's
  // channels (the lane bits from kLanes up): N values over 32 / kLanes = 2 N
  // lanes, one total per lane, the same in both lanes of a pair.
  using StateSum = Transposed<N, kWarp / 2, kLanes>;
  static_assert(kStates % kLanes == 0 && kChannels % E == 0 && kAllThreads % kThreads == 0, "whole warps");
  static_assert(StateSum::held() == 1, "one total per lane");

  int lane, part;
  bool writes_channel_sums, writes_state_sums;
  int state_slot;                    // the state whose warp total the lane writes (within its N)
  int out_at[ChannelSum::held()];    // where its dx / ddt totals go at t = 0 (dx plane, then ddt)
  StepInputs in[E];                  // the next step's inputs
  float sa[V], h[V], dh[V], dA[V];   // A log2(e); the state; dL/dh carried back; dA
  float sink[N];                     // no reduction: dBm's and dCm's terms, summed over channels and time
  volatile float* totals;            // warp sums: the warp's [T][32] row (dCm of state s at s, dBm at 16 + s)

  __device__ Lane(const float* seed, int thread, volatile float* warp_totals) : totals(warp_totals) {
    lane = threadIdx.x % kWarp;
    part = thread % kLanes;
    const int first = thread / kLanes * E;  // the lane's first channel (task)
    const int base = first / kChannels * kLength * kChannels + first % kChannels;
    writes_channel_sums = ChannelSum::writer(lane);
    writes_state_sums = StateSum::writer(lane);
    state_slot = StateSum::slot(lane);
#pragma unroll
    for (int k = 0; k < ChannelSum::held(); ++k) {
      const int j = ChannelSum::slot(lane) + k;  // j < E: dx of channel j, else ddt of channel j - E
      out_at[k] = j / E * kPlane + base + j % E;
    }
#pragma unroll
    for (int e = 0; e < E; ++e) {
      in[e].start(seed[(first + e) % kSeeds]);
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const int v = e * N + i;
        sa[v] = scaled_a_of(first + e, part * N + i);
        h[v] = dh[v] = dA[v] = 0;
      }
    }
#pragma unroll
    for (int i = 0; i < N; ++i) sink[i] = 0;
  }

  // Warp sums: the warp's total of terms[] (dCm or dBm of the lane's states)
  // for tile step u; `which` 0 for dCm, kStates for dBm.
  __device__ __forceinline__ void write_state_sum(float (&terms)[N], int u, int which) {
    transposed_sum<N, kWarp / 2, kLanes>(terms, lane);
    if (writes_state_sums) totals[u * kWarp + which + part * N + state_slot] = terms[0];
  }

  // Step u of the tile forward: keeps the entering state and the decay.
  __device__ __forceinline__ void replay_step(int u, const StepInputs (&at)[E], float (&state)[V], float (&decay)[V]) {
    float dc[N];  // warp sums: dCm's terms, the lane's channels added
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const float input = at[e].dt * at[e].x;
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const int v = e * N + i;
        state[v] = h[v];
        decay[v] = ex2(at[e].dt * sa[v]);
        h[v] = fmaf(decay[v], h[v], input * b_of(i));
        if constexpr (kWarpSums) {
          e == 0 ? add_product<true>(dc[i], at[e].dy, h[v]) : add_product<false>(dc[i], at[e].dy, h[v]);
        } else {
          sink[i] = fmaf(at[e].dy, h[v], sink[i]);
        }
      }
    }
    if constexpr (kWarpSums) write_state_sum(dc, u, 0);
  }

  // Step t = tile step u walked back; writes dx and ddt.
  __device__ __forceinline__ void walk_back_step(float* out, int t, int u, const StepInputs (&at)[E],
                                                 const float (&state)[V], const float (&decay)[V]) {
    float db[N];                // warp sums: dBm's terms, the lane's channels added
    float dhb[E], d_exp[E];     // per channel: sum dh b; sum r sa (ddt's decay part times log2(e))
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const float input = at[e].dt * at[e].x;
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const int v = e * N + i;
        dh[v] = fmaf(c_of(i), at[e].dy, dh[v]);  // dL/dh_t
        i == 0 ? add_product<true>(dhb[e], dh[v], b_of(i)) : add_product<false>(dhb[e], dh[v], b_of(i));
        if constexpr (kWarpSums) {
          e == 0 ? add_product<true>(db[i], dh[v], input) : add_product<false>(db[i], dh[v], input);
        } else {
          sink[i] = fmaf(dh[v], input, sink[i]);
        }
        dh[v] *= decay[v];  // dL/dh_{t-1} through the decay
        const float r = dh[v] * state[v];  // dL/d(dt A) = dh_t a_t h_{t-1}
        dA[v] = fmaf(r, at[e].dt, dA[v]);
        i == 0 ? add_product<true>(d_exp[e], r, sa[v]) : add_product<false>(d_exp[e], r, sa[v]);
      }
    }
    if constexpr (kWarpSums) write_state_sum(db, u, kStates);
    float sums[2 * E];  // the lane's parts of dx, then ddt, of its channels
#pragma unroll
    for (int e = 0; e < E; ++e) {
      sums[e] = at[e].dt * dhb[e];
      sums[E + e] = fmaf(at[e].x, dhb[e], kLn2 * d_exp[e]);
    }
    transposed_sum<2 * E, kLanes / 2, 1>(sums, lane);
    if (writes_channel_sums) {
#pragma unroll
      for (int k = 0; k < ChannelSum::held(); ++k) out[out_at[k] + t * kChannels] = sums[k];
    }
  }

  // Steps t0 .. t0 + kT - 1: replay, then walk back. The tile that follows
  // enters from the state after this one's first step (for kT = 1: its last).
  template <int kT>
  __device__ __forceinline__ void tile(float* out, int t0) {
    StepInputs at[kT][E];
    float state[kT][V], decay[kT][V];
#pragma unroll
    for (int u = 0; u < kT; ++u) {
#pragma unroll
      for (int e = 0; e < E; ++e) {
        at[u][e] = in[e];
        in[e].advance();
      }
      replay_step(u, at[u], state[u], decay[u]);
    }
#pragma unroll
    for (int u = kT - 1; u >= 0; --u) walk_back_step(out, t0 + u, u, at[u], state[u], decay[u]);
    if constexpr (kT > 1) {
#pragma unroll
      for (int v = 0; v < V; ++v) h[v] = state[1][v];
    }
  }

  // dA (and without warp sums, the sinks), coalesced.
  __device__ void finish(float* finals, int thread) const {
#pragma unroll
    for (int v = 0; v < V; ++v) finals[v * kAllThreads + thread] = dA[v];
    if constexpr (!kWarpSums) {
#pragma unroll
      for (int i = 0; i < N; ++i) finals[(V + i) * kAllThreads + thread] = sink[i];
    }
  }
};

// out: dx [B, L, C], then ddt; finals: dA and the no-reduction sums (one
// column per thread). Tiles of kTile steps, then single steps for the last
// L % kTile (197 is prime).
template <int kLanes, int kLaneChannels, int kTile, bool kWarpSums, int kMinBlocks>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    backward_floor_kernel(const float* __restrict__ seed, float* __restrict__ out, float* __restrict__ finals) {
  __shared__ float totals[kWarps][kTile][kWarp];
  const int thread = blockIdx.x * kThreads + threadIdx.x;
  Lane<kLanes, kLaneChannels, kWarpSums> lane(seed, thread, &totals[threadIdx.x / kWarp][0][0]);
  int t0 = 0;
#pragma unroll 1
  for (; t0 + kTile <= kLength; t0 += kTile) lane.template tile<kTile>(out, t0);
#pragma unroll 1
  for (; t0 < kLength; ++t0) lane.template tile<1>(out, t0);
  lane.finish(finals, thread);
}

// ---------------------------------------------------------------- reference
// dx ([t]) and ddt ([kLength + t]) of one channel (task) by the kernels'
// recurrence, tile for tile, in double (N: states per lane, which Bm's and
// Cm's values depend on).
std::vector<double> reference(int task, int lane_states, int tile_steps) {
  std::vector<double> grads(2 * kLength), h(kStates, 0.0), dh(kStates, 0.0);
  StepInputs in;
  in.start(seed_of(task % kSeeds));
  for (int t0 = 0; t0 < kLength;) {
    const int steps = t0 + tile_steps <= kLength ? tile_steps : 1;
    std::vector<StepInputs> at(steps);
    std::vector<std::vector<double>> state(steps, std::vector<double>(kStates)), decay = state;
    for (int u = 0; u < steps; ++u) {
      at[u] = in;
      in.advance();
      for (int s = 0; s < kStates; ++s) {
        state[u][s] = h[s];
        decay[u][s] = std::exp2(static_cast<double>(at[u].dt * scaled_a_of(task, s)));
        h[s] = decay[u][s] * h[s] + static_cast<double>(at[u].dt) * at[u].x * b_of(s % lane_states);
      }
    }
    for (int u = steps - 1; u >= 0; --u) {
      double dhb = 0, d_exp = 0;
      for (int s = 0; s < kStates; ++s) {
        dh[s] += c_of(s % lane_states) * static_cast<double>(at[u].dy);
        dhb += dh[s] * b_of(s % lane_states);
        dh[s] *= decay[u][s];
        d_exp += dh[s] * state[u][s] * scaled_a_of(task, s);
      }
      grads[t0 + u] = at[u].dt * dhb;
      grads[kLength + t0 + u] = at[u].x * dhb + std::log(2.0) * d_exp;
    }
    if (steps > 1) h = state[1];
    t0 += steps;
  }
  return grads;
}

// The largest error of the kernel's dx and ddt (out: dx, then ddt) for a few
// channels, relative to the largest magnitude of each over the channel.
double check(const float* out, int lane_states, int tile_steps) {
  double worst = 0;
  for (const int task : {0, 1, 12345, kTasks - 1}) {
    const std::vector<double> want = reference(task, lane_states, tile_steps);
    const int at = task / kChannels * kLength * kChannels + task % kChannels;
    std::vector<float> got(2 * kLength);
    for (int plane = 0; plane < 2; ++plane) {
      cudaMemcpy2D(got.data() + plane * kLength, sizeof(float), out + plane * static_cast<size_t>(kPlane) + at,
                   kChannels * sizeof(float), sizeof(float), kLength, cudaMemcpyDeviceToHost);
    }
    for (int plane = 0; plane < 2; ++plane) {
      double scale = 0, error = 0;
      for (int t = 0; t < kLength; ++t) {
        const int i = plane * kLength + t;
        scale = std::max(scale, std::fabs(want[i]));
        error = std::max(error, std::fabs(got[i] - want[i]));  // NaN (unwritten) fails below
        if (std::isnan(got[i])) error = INFINITY;
      }
      worst = std::max(worst, error / scale);
    }
  }
  return worst;
}

// ---------------------------------------------------------------- timing
// Median of `runs` timed calls after 3 untimed ones, in ms.
template <typename Launch>
float median_ms(const Launch& launch, int runs) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (int i = 0; i < 3; ++i) launch();
  std::vector<float> times;
  for (int i = 0; i < runs; ++i) {
    cudaEventRecord(start);
    launch();
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Device-to-device copy of 1 GiB: bytes read + written per second, in GB/s.
double copy_gbps() {
  const size_t bytes = size_t{1} << 30;
  void *src, *dst;
  cudaMalloc(&src, bytes);
  cudaMalloc(&dst, bytes);
  cudaMemset(src, 0, bytes);
  const float ms = median_ms([&] { cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice); }, 10);
  cudaFree(src);
  cudaFree(dst);
  return 2.0 * bytes / ms / 1e6;
}

// The MUFU's exp2 rate: 16 independent chains v <- 2^-v (in [0.5, 1]) per
// thread, every SM full (8 blocks of 256), in Gexp/s.
constexpr int kProbeChains = 16, kProbeThreads = 256, kProbeLinks = 1024;

__global__ void __launch_bounds__(kProbeThreads, 8) exp2_probe_kernel(float* out) {
  float v[kProbeChains];
#pragma unroll
  for (int i = 0; i < kProbeChains; ++i) v[i] = 0.5f + 0.01f * i + 1e-7f * threadIdx.x;
#pragma unroll 4
  for (int k = 0; k < kProbeLinks; ++k) {
#pragma unroll
    for (int i = 0; i < kProbeChains; ++i) asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(v[i]) : "f"(-v[i]));
  }
  float sum = 0;
#pragma unroll
  for (int i = 0; i < kProbeChains; ++i) sum += v[i];
  out[blockIdx.x * kProbeThreads + threadIdx.x] = sum;
}

double exp2_gexps(int sms) {
  const int blocks = sms * 8;
  float* sink;
  cudaMalloc(&sink, sizeof(float) * blocks * kProbeThreads);
  const float ms = median_ms([&] { exp2_probe_kernel<<<blocks, kProbeThreads>>>(sink); }, 10);
  cudaFree(sink);
  return static_cast<double>(blocks) * kProbeThreads * kProbeChains * kProbeLinks / ms / 1e6;
}

// ---------------------------------------------------------------- variants
struct Context {
  const float* seed;
  float* out;     // dx, then ddt
  float* finals;  // dA and the no-reduction sums
  double copy_gbps;
  float best_ms[2];  // no reduction, warp sums
};
constexpr size_t kFinalFloats = size_t{2} * kStates * kTasks;  // (V + N) per thread at most

// Times one variant and checks its dx and ddt; skips it if it spills.
template <int kLanes, int kLaneChannels, int kTile, bool kWarpSums, int kMinBlocks>
void time_variant(Context& ctx) {
  using L = Lane<kLanes, kLaneChannels, kWarpSums>;
  static_assert((L::V + L::N) * static_cast<size_t>(L::kAllThreads) <= kFinalFloats, "finals buffer");
  auto* kernel = backward_floor_kernel<kLanes, kLaneChannels, kTile, kWarpSums, kMinBlocks>;
  cudaFuncAttributes attributes{};
  cudaFuncGetAttributes(&attributes, kernel);
  int sms = 0, blocks_per_sm = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_per_sm, kernel, kThreads, 0);
  const int blocks = L::kAllThreads / kThreads;
  std::printf("%d lanes x %d channels (%2d values), T %d, %-13s %3d regs, %2d of %4.1f warps/SM: ", kLanes,
              kLaneChannels, L::V, kTile, kWarpSums ? "warp sums," : "no reduction,", attributes.numRegs,
              blocks_per_sm * kWarps, static_cast<double>(blocks) * kWarps / sms);
  if (attributes.localSizeBytes > 0) {
    std::printf("%zu bytes of local memory (spills): skipped\n", attributes.localSizeBytes);
    return;
  }
  cudaMemset(ctx.out, 0xff, sizeof(float) * 2 * kPlane);  // NaN: what the kernel does not write fails the check
  const float ms = median_ms([&] { kernel<<<blocks, kThreads>>>(ctx.seed, ctx.out, ctx.finals); }, 20);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    std::printf("CUDA error: %s\n", cudaGetErrorString(status));
    return;
  }
  const double gbps = kRowBytes / ms / 1e6;
  const double error = check(ctx.out, L::N, kTile);
  std::printf("%.4f ms, %5.0f GB/s, %4.1f%% of copy, dx/ddt error %.1e%s\n", ms, gbps, 100 * gbps / ctx.copy_gbps,
              error, error < 1e-3 ? "" : " FAILED");
  if (error < 1e-3) ctx.best_ms[kWarpSums] = std::min(ctx.best_ms[kWarpSums], ms);
}

}  // namespace

int main() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  const double copy = copy_gbps(), exps = exp2_gexps(sms);
  const double exponentials = static_cast<double>(kTasks) * kLength * kStates;
  std::printf("bytes of the bench row %.1f MB; copy %.0f GB/s: the 60%% bar is %.4f ms\n", kRowBytes / 1e6, copy,
              kRowBytes / (0.6 * copy) / 1e6);
  const double exp_ms = exponentials / exps / 1e6;
  std::printf("exp2 %.0f Gexp/s: the exp floor, %.0f M exponentials (one per step, channel and state), is %.4f ms "
              "(%.1f%% of copy)\n", exps, exponentials / 1e6, exp_ms, 100 * kRowBytes / exp_ms / 1e6 / copy);
  std::vector<float> seeds(kSeeds);
  for (int i = 0; i < kSeeds; ++i) seeds[i] = seed_of(i);
  float *seed, *out, *finals;
  cudaMalloc(&seed, sizeof(float) * kSeeds);
  cudaMalloc(&out, sizeof(float) * 2 * kPlane);
  cudaMalloc(&finals, sizeof(float) * kFinalFloats);
  cudaMemcpy(seed, seeds.data(), sizeof(float) * kSeeds, cudaMemcpyHostToDevice);
  Context ctx{seed, out, finals, copy, {INFINITY, INFINITY}};

  // <lanes per channel, channels per lane, T, warp sums, blocks per SM>, and
  // the registers that ptxas (CUDA 13.0, sm_90a) gives them, none spilling.
  // Not listed, because they spill at any bound: 1 x 1 with T = 8 and warp
  // sums; 2 x 2 with T = 8.
  time_variant<1, 1, 2, false, 3>(ctx);   // 163
  time_variant<1, 1, 2, true, 3>(ctx);    // 168
  time_variant<1, 1, 4, false, 3>(ctx);   // 168
  time_variant<1, 1, 4, true, 2>(ctx);    // 255
  time_variant<1, 1, 8, false, 2>(ctx);   // 255
  time_variant<2, 1, 2, false, 6>(ctx);   // 80
  time_variant<2, 1, 2, true, 6>(ctx);    // 80
  time_variant<2, 1, 4, false, 5>(ctx);   // 96
  time_variant<2, 1, 4, true, 4>(ctx);    // 127
  time_variant<2, 1, 8, false, 2>(ctx);   // 218
  time_variant<2, 1, 8, true, 2>(ctx);    // 243
  time_variant<4, 1, 2, false, 10>(ctx);  // 48
  time_variant<4, 1, 2, true, 10>(ctx);   // 48
  time_variant<4, 1, 4, false, 7>(ctx);   // 72
  time_variant<4, 1, 4, true, 7>(ctx);    // 72
  time_variant<4, 1, 8, false, 4>(ctx);   // 128
  time_variant<4, 1, 8, true, 4>(ctx);    // 128
  time_variant<2, 2, 2, false, 3>(ctx);   // 161
  time_variant<2, 2, 2, true, 3>(ctx);    // 165
  time_variant<2, 2, 4, false, 2>(ctx);   // 254
  time_variant<2, 2, 4, true, 2>(ctx);    // 255
  time_variant<4, 2, 2, false, 6>(ctx);   // 80
  time_variant<4, 2, 2, true, 5>(ctx);    // 96
  time_variant<4, 2, 4, false, 4>(ctx);   // 128
  time_variant<4, 2, 4, true, 4>(ctx);    // 128
  time_variant<4, 2, 8, false, 2>(ctx);   // 245
  time_variant<4, 2, 8, true, 2>(ctx);    // 248

  for (int kind = 0; kind < 2; ++kind) {
    const double gbps = kRowBytes / ctx.best_ms[kind] / 1e6;
    std::printf("best, %s: %.4f ms, %5.0f GB/s, %4.1f%% of copy (bar %.0f%%)\n", kind ? "warp sums" : "no reduction",
                ctx.best_ms[kind], gbps, 100 * gbps / copy, 60.0);
  }
  cudaFree(seed);
  cudaFree(out);
  cudaFree(finals);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    std::printf("CUDA error: %s\n", cudaGetErrorString(status));
    return 1;
  }
  return 0;
}

// CUDA kernel of attention_row_stat_sums.
//
// A block takes one (image, head); its warps take every kStatWarps-th kept
// query row. A warp loads the row (dropped columns and the slots past N as
// -1, below every probability), sorts it descending with CUB's WarpMergeSort
// (a lane then holds kItems consecutive places of the sorted row), and
// computes the statistics from that blocked layout: the mass thresholds k50,
// k90 and k99 count the places whose running sum (a warp scan of the lanes'
// sums, then each lane's own run) is still short of the mass. Each warp adds
// its rows' statistics in registers; the block adds its warps' sums in warp
// order, so the result does not depend on scheduling. kItems is the smallest
// compiled width with 32 kItems >= N.
#include <cub/warp/warp_merge_sort.cuh>

#include <cstdint>
#include <utility>

#include "engine/cuda/cuda_utils.cuh"
#include "engine/ops/attention_stats/attention_stats.h"
#include "engine/ops/attention_stats/attention_stats_kernels.h"

namespace engine {

namespace {

constexpr int kStatWarps = 4;
constexpr float kDropped = -1.0f;  // sorts after every probability

using ItemWidths = std::integer_sequence<int, 2, 4, 8, 16, 32, 64>;
static_assert(32 * 64 == kRowStatsMaxTokensCuda, "ItemWidths must end at kRowStatsMaxTokensCuda / 32");

struct Descending {
  __device__ bool operator()(float a, float b) const { return a > b; }
};

// The sums over the lanes of a warp (every lane gets them) of one row's
// per-place terms.
struct RowTerms {
  double entropy = 0, top_tenth = 0, gini_weighted = 0, total = 0;
  int below_k50 = 0, below_k90 = 0, below_k99 = 0, below_tenth_uniform = 0;
};

__device__ double exclusive_warp_sum(double value, int lane) {
  double inclusive = value;
  for (int delta = 1; delta < 32; delta *= 2) {
    const double other = __shfl_up_sync(0xffffffffu, inclusive, delta);
    if (lane >= delta) inclusive += other;
  }
  return inclusive - value;
}

// The statistics of a sorted row of n kept values (`scale` renormalises them)
// held as kItems consecutive places per lane.
template <int kItems>
__device__ void row_stats(const float (&sorted)[kItems], int n, double scale, int lane, double* stats) {
  const int first = lane * kItems;
  // p(i): the probability at the lane's i-th place (0 past the row).
  auto p = [&](int i) { return first + i < n ? static_cast<double>(sorted[i]) * scale : 0.0; };
  double lane_sum = 0;
#pragma unroll
  for (int i = 0; i < kItems; ++i) lane_sum += p(i);
  double running = exclusive_warp_sum(lane_sum, lane);
  const int top_tenth = (n + 9) / 10;
  const double tenth_uniform = 0.1 / n;
  RowTerms t;
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int place = first + i;
    if (place >= n) break;
    const double pi = p(i);
    running += pi;
    t.below_k50 += running < 0.5 - kMassTolerance;
    t.below_k90 += running < 0.9 - kMassTolerance;
    t.below_k99 += running < 0.99 - kMassTolerance;
    if (pi > 0) t.entropy -= pi * log(pi);
    if (place < top_tenth) t.top_tenth += pi;
    t.gini_weighted += static_cast<double>(n - 2 * place - 1) * pi;
    t.total += pi;
    t.below_tenth_uniform += pi < tenth_uniform;
  }
  t.entropy = warp_all_reduce(t.entropy, SumOp{});
  t.top_tenth = warp_all_reduce(t.top_tenth, SumOp{});
  t.gini_weighted = warp_all_reduce(t.gini_weighted, SumOp{});
  t.total = warp_all_reduce(t.total, SumOp{});
  t.below_k50 = warp_all_reduce(t.below_k50, SumOp{});
  t.below_k90 = warp_all_reduce(t.below_k90, SumOp{});
  t.below_k99 = warp_all_reduce(t.below_k99, SumOp{});
  t.below_tenth_uniform = warp_all_reduce(t.below_tenth_uniform, SumOp{});
  stats[kRowCount] += 1;
  stats[kRowTokens] += n;
  stats[kRowEntropy] += t.entropy;
  stats[kRowEntropyNorm] += n > 1 ? t.entropy / log(static_cast<double>(n)) : 0.0;
  stats[kRowK50] += min(n, 1 + t.below_k50);
  stats[kRowK90] += min(n, 1 + t.below_k90);
  stats[kRowK99] += min(n, 1 + t.below_k99);
  stats[kRowTop1Mass] += __shfl_sync(0xffffffffu, p(0), 0);
  stats[kRowTopk10Mass] += t.top_tenth;
  stats[kRowGini] += t.total > 0 ? t.gini_weighted / (static_cast<double>(n) * t.total) : 0.0;
  stats[kRowBelowTenthUniform] += static_cast<double>(t.below_tenth_uniform) / n;
}

template <int kItems>
__global__ void __launch_bounds__(kStatWarps * 32)
    row_stat_sums_kernel_cuda(const float* probs, const uint8_t* keep, int64_t heads, int tokens, int cls_token,
                              double* sums) {
  using WarpSort = cub::WarpMergeSort<float, kItems, 32>;
  __shared__ typename WarpSort::TempStorage sort_storage[kStatWarps];
  __shared__ double warp_sums[kStatWarps][2][kRowStats];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t image_head = blockIdx.x;
  const uint8_t* kept = keep ? keep + image_head / heads * tokens : nullptr;
  int n = tokens;
  if (kept) {
    n = 0;
    for (int base = 0; base < tokens; base += 32) {
      const int j = base + lane;
      n += __popc(__ballot_sync(0xffffffffu, j < tokens && kept[j]));
    }
  }
  double all_rows[kRowStats] = {}, cls_row[kRowStats] = {};
  for (int q = warp; q < tokens; q += kStatWarps) {
    if (kept && !kept[q]) continue;  // the same for the whole warp
    const float* row = probs + (image_head * tokens + q) * tokens;
    float values[kItems];
    double row_total = 0;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int j = i * 32 + lane;
      values[i] = j < tokens && (!kept || kept[j]) ? row[j] : kDropped;
      if (values[i] != kDropped) row_total += values[i];
    }
    // Dropped columns: the kept ones are renormalised to sum to 1.
    row_total = warp_all_reduce(row_total, SumOp{});
    const double scale = n < tokens && row_total > 0 ? 1.0 / row_total : 1.0;
    WarpSort(sort_storage[warp]).Sort(values, Descending{});
    __syncwarp();  // the next row's sort reuses the storage
    row_stats(values, n, scale, lane, q == cls_token ? cls_row : all_rows);
    if (q == cls_token) {
      for (int i = 0; i < kRowStats; ++i) all_rows[i] += cls_row[i];
    }
  }
  if (lane == 0) {
    for (int i = 0; i < kRowStats; ++i) {
      warp_sums[warp][0][i] = all_rows[i];
      warp_sums[warp][1][i] = cls_row[i];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < 2 * kRowStats; i += blockDim.x) {
    double total = 0;
    for (int w = 0; w < kStatWarps; ++w) total += (&warp_sums[w][0][0])[i];
    sums[image_head * 2 * kRowStats + i] = total;
  }
}

// Launches the kernel of kItems places per lane when a row fits; false if not.
template <int kItems>
bool launch_if_fits(const Tensor& probs, const Tensor& keep, int64_t cls_token, const Tensor& sums) {
  const int64_t tokens = probs.size(2);
  if (tokens > 32 * kItems) return false;
  row_stat_sums_kernel_cuda<kItems><<<static_cast<unsigned>(probs.size(0) * probs.size(1)), kStatWarps * 32, 0,
                                      current_stream()>>>(
      data_of<float>(probs), keep.defined() ? data_of<uint8_t>(keep) : nullptr, probs.size(1),
      static_cast<int>(tokens), static_cast<int>(cls_token), mutable_data_of<double>(sums));
  CUDA_CHECK_LAUNCH();
  return true;
}

template <int... kWidths>
void launch_row_stat_sums(std::integer_sequence<int, kWidths...>, const Tensor& probs, const Tensor& keep,
                          int64_t cls_token, const Tensor& sums) {
  const bool launched = (launch_if_fits<kWidths>(probs, keep, cls_token, sums) || ...);
  // (attention_row_stat_sums gives longer rows to the CPU kernel.)
  check(launched, "attention_row_stat_sums: the CUDA kernel sorts rows of up to {} tokens, got {}",
        kRowStatsMaxTokensCuda, probs.size(2));
}

void row_stat_sums_cuda(const Tensor& probs, const Tensor& keep, int64_t cls_token, const Tensor& sums) {
  DeviceGuard guard(probs);
  check(probs.size(0) * probs.size(1) <= INT32_MAX,
        "attention_row_stat_sums: {} has {} (image, head) pairs, more than the {} blocks of one launch", probs,
        probs.size(0) * probs.size(1), INT32_MAX);
  launch_row_stat_sums(ItemWidths{}, probs, keep, cls_token, sums);
}

}  // namespace

// Fills the CUDA side of the slot defined in attention_stats_cpu.cpp.
static const bool registered = [] {
  row_stat_sums_kernel.cuda = &row_stat_sums_cuda;
  return true;
}();

}  // namespace engine

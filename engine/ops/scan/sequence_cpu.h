// How the CPU references of the sequence ops (scan_cpu.cpp,
// selective_scan_cpu.cpp, engine/ops/conv/depthwise_conv1d_cpu.cpp) split
// their work: over (batch, channel), where the recurrences are independent,
// with OpenMP. Reductions over batch or channels (the parameter gradients) go
// through per-task partial sums added up afterwards in a fixed order, so
// results do not depend on the thread count.
#pragma once
#include <algorithm>

#include "engine/ops/strided.h"

namespace engine {

namespace sequence {

// The [B, L, C] kernels run one task per (batch, block of channels): each
// walks its block along the sequence with a contiguous inner loop.
constexpr int64_t kChannelBlock = 64;

inline int64_t channel_blocks(int64_t channels) { return (channels + kChannelBlock - 1) / kChannelBlock; }

// Calls body(b, c_begin, c_end) for every task, in parallel when `work` is large.
template <typename Body>
void for_each_channel_block(int64_t batch, int64_t channels, int64_t work, const Body& body) {
  const int64_t blocks = channel_blocks(channels);
#pragma omp parallel for schedule(static) if (work >= kParallelElements)
  for (int64_t task = 0; task < batch * blocks; ++task) {
    const int64_t b = task / blocks, begin = task % blocks * kChannelBlock;
    body(b, begin, std::min(channels, begin + kChannelBlock));
  }
}

// out[i] = sum of partial[r * n + i] over r = 0..rows-1, added in order.
template <typename T>
void sum_rows(const T* partial, int64_t rows, int64_t n, T* out) {
  std::fill(out, out + n, T(0));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < n; ++i) out[i] += partial[r * n + i];
  }
}

}  // namespace sequence

}  // namespace engine

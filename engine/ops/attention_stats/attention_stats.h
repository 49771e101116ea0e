// Sparsity statistics of softmax attention rows, summed per image and head:
// the op behind train/sparsity.h (the definitions are there and in
// docs/SPARSITY.md). The CPU kernel is the reference; the CUDA kernel sorts
// each row within a warp, so a layer's probabilities never leave the GPU and
// only the [B, H, 2, kRowStats] sums do.
#pragma once
#include <array>
#include <cstdint>

#include "engine/tensor.h"

namespace engine {

// The statistics of one row, in the order the kernels write them.
enum RowStat : int {
  kRowCount,  // 1 per row: the sums' row count
  kRowTokens,
  kRowEntropy,
  kRowEntropyNorm,
  kRowK50,
  kRowK90,
  kRowK99,
  kRowTop1Mass,
  kRowTopk10Mass,
  kRowGini,
  kRowBelowTenthUniform,
  kRowStats
};
using RowStats = std::array<double, kRowStats>;

// Prefix sums may fall short of a k-mass by this much and still count, so that
// exact ties survive rounding: nine of ten uniform 0.1s sum to 0.8999999999999999.
constexpr double kMassTolerance = 1e-9;

// The smallest k whose k largest of p[0..n) (sorted descending) sum to >= mass.
int64_t k_for_mass_sorted(const double* p, int64_t n, double mass);
// All statistics of the row p[0..n), sorted descending (kRowCount = 1).
RowStats sorted_row_stats(const double* p, int64_t n);

// The most tokens the CUDA kernel sorts in a warp; the op gives longer rows
// to the CPU kernel (the probabilities copied to the host).
constexpr int64_t kRowStatsMaxTokensCuda = 2048;

// probs: the softmax attention [B, H, N, N] of one layer (any floating-point
// dtype, read as float32). keep_mask: uint8 [B, N], non-zero = kept (A-ViT halting),
// or undefined (all kept). Only rows of kept queries count and only kept key
// columns are read, renormalised to sum to 1 when some were dropped, so a
// row's n is its image's number of kept tokens.
// Returns float64 [B, H, 2, kRowStats] on probs' device: per image and head,
// [.., 0, :] the sums of each statistic over its kept query rows and
// [.., 1, :] the statistics of query `cls_token`'s row (zeros when cls_token
// is -1 or that token is not kept). Deterministic on either device.
Tensor attention_row_stat_sums(const Tensor& probs, const Tensor& keep_mask, int64_t cls_token);

}  // namespace engine

// CPU reference of attention_row_stat_sums: each kept row gathered as
// float64, renormalised when columns were dropped, sorted, and its
// statistics computed in plain loops; one (image, head) per OpenMP task, its
// rows summed in query order, so the sums do not depend on the threads.
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

#include "engine/ops/attention_stats/attention_stats.h"
#include "engine/ops/attention_stats/attention_stats_kernels.h"

namespace engine {

int64_t k_for_mass_sorted(const double* p, int64_t n, double mass) {
  double sum = 0;
  for (int64_t k = 0; k < n; ++k) {
    sum += p[k];
    if (sum >= mass - kMassTolerance) return k + 1;
  }
  return n;
}

RowStats sorted_row_stats(const double* p, int64_t n) {
  RowStats s{};
  s[kRowCount] = 1;
  s[kRowTokens] = static_cast<double>(n);
  // gini: p_(i), the i-th smallest (1-based), is p[n - i] here, so its weight
  // 2i - n - 1 becomes n - 2j - 1 for p[j].
  double weighted = 0, total = 0;
  const int64_t top_tenth = (n + 9) / 10;  // ceil(n / 10) without rounding error
  const double tenth_uniform = 0.1 / static_cast<double>(n);
  for (int64_t j = 0; j < n; ++j) {
    if (p[j] > 0) s[kRowEntropy] -= p[j] * std::log(p[j]);
    if (j < top_tenth) s[kRowTopk10Mass] += p[j];
    weighted += static_cast<double>(n - 2 * j - 1) * p[j];
    total += p[j];
    if (p[j] < tenth_uniform) s[kRowBelowTenthUniform] += 1;
  }
  s[kRowEntropyNorm] = n > 1 ? s[kRowEntropy] / std::log(static_cast<double>(n)) : 0.0;
  s[kRowK50] = static_cast<double>(k_for_mass_sorted(p, n, 0.5));
  s[kRowK90] = static_cast<double>(k_for_mass_sorted(p, n, 0.9));
  s[kRowK99] = static_cast<double>(k_for_mass_sorted(p, n, 0.99));
  s[kRowTop1Mass] = n > 0 ? p[0] : 0.0;
  s[kRowGini] = total > 0 ? weighted / (static_cast<double>(n) * total) : 0.0;
  if (n > 0) s[kRowBelowTenthUniform] /= static_cast<double>(n);
  return s;
}

namespace {

// The kept token indices of one image: all of 0..n-1 without a mask.
std::vector<int64_t> kept_tokens(const uint8_t* keep, int64_t n) {
  std::vector<int64_t> kept;
  for (int64_t t = 0; t < n; ++t) {
    if (!keep || keep[t]) kept.push_back(t);
  }
  return kept;
}

// The kept columns of one row as doubles, sorted descending; renormalised to
// sum 1 when some columns were dropped.
void gather_row(const float* full_row, const std::vector<int64_t>& columns, int64_t n, std::vector<double>& row) {
  row.resize(columns.size());
  for (size_t j = 0; j < columns.size(); ++j) row[j] = full_row[columns[j]];
  if (static_cast<int64_t>(columns.size()) < n) {
    const double total = std::accumulate(row.begin(), row.end(), 0.0);
    if (total > 0) {
      for (double& v : row) v /= total;
    }
  }
  std::sort(row.begin(), row.end(), std::greater<>());
}

void add_into(double* sums, const RowStats& row) {
  for (int i = 0; i < kRowStats; ++i) sums[i] += row[i];
}

void row_stat_sums_cpu(const Tensor& probs, const Tensor& keep, int64_t cls_token, const Tensor& sums) {
  const int64_t batch = probs.size(0), heads = probs.size(1), n = probs.size(2);
  const float* values = probs.data<float>();
  const uint8_t* keep_values = keep.defined() ? keep.data<uint8_t>() : nullptr;
  double* out = sums.data<double>();
  std::fill(out, out + sums.numel(), 0.0);
#pragma omp parallel
  {
    std::vector<double> row;
#pragma omp for schedule(dynamic)
    for (int64_t bh = 0; bh < batch * heads; ++bh) {
      const std::vector<int64_t> tokens = kept_tokens(keep_values ? keep_values + bh / heads * n : nullptr, n);
      double* all_rows = out + bh * 2 * kRowStats;
      for (int64_t q : tokens) {
        gather_row(values + (bh * n + q) * n, tokens, n, row);
        const RowStats stats = sorted_row_stats(row.data(), static_cast<int64_t>(row.size()));
        add_into(all_rows, stats);
        if (q == cls_token) add_into(all_rows + kRowStats, stats);
      }
    }
  }
}

}  // namespace

KernelSlot<RowStatSumsKernel> row_stat_sums_kernel{"attention_row_stat_sums", &row_stat_sums_cpu, nullptr};

}  // namespace engine

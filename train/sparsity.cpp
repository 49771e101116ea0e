#include "train/sparsity.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include "engine/ops/attention_stats/attention_stats.h"

namespace engine {

namespace {

void sort_descending(std::vector<double>& row) { std::sort(row.begin(), row.end(), std::greater<>()); }

// The op's statistics (engine/ops/attention_stats) as SparsityMetrics.
SparsityMetrics metrics_from(const double* stats) {
  SparsityMetrics m;
  m.rows = static_cast<int64_t>(std::llround(stats[kRowCount]));
  m.tokens = stats[kRowTokens];
  m.entropy = stats[kRowEntropy];
  m.entropy_norm = stats[kRowEntropyNorm];
  m.k50 = stats[kRowK50];
  m.k90 = stats[kRowK90];
  m.k99 = stats[kRowK99];
  m.top1_mass = stats[kRowTop1Mass];
  m.topk10_mass = stats[kRowTopk10Mass];
  m.gini = stats[kRowGini];
  m.below_tenth_uniform = stats[kRowBelowTenthUniform];
  return m;
}

void add_into(SparsityMetrics& sum, const SparsityMetrics& x) {
  sum.rows += x.rows;
  for (const auto& [name, field] : SparsityMetrics::fields()) sum.*field += x.*field;
}

SparsityMetrics mean_of(const SparsityMetrics& sum) {
  SparsityMetrics mean = sum;
  if (sum.rows == 0) return mean;
  for (const auto& [name, field] : SparsityMetrics::fields()) mean.*field /= static_cast<double>(sum.rows);
  return mean;
}

}  // namespace

const std::vector<SparsityMetrics::Field>& SparsityMetrics::fields() {
  static const std::vector<Field> fields = {
      {"tokens", &SparsityMetrics::tokens},
      {"entropy", &SparsityMetrics::entropy},
      {"entropy_norm", &SparsityMetrics::entropy_norm},
      {"k50", &SparsityMetrics::k50},
      {"k90", &SparsityMetrics::k90},
      {"k99", &SparsityMetrics::k99},
      {"top1_mass", &SparsityMetrics::top1_mass},
      {"topk10_mass", &SparsityMetrics::topk10_mass},
      {"gini", &SparsityMetrics::gini},
      {"below_tenth_uniform", &SparsityMetrics::below_tenth_uniform},
  };
  return fields;
}

double row_entropy(const std::vector<double>& row) { return row_metrics(row).entropy; }

int64_t row_k_for_mass(std::vector<double> row, double mass) {
  sort_descending(row);
  return k_for_mass_sorted(row.data(), static_cast<int64_t>(row.size()), mass);
}

double row_top_mass(std::vector<double> row, int64_t k) {
  sort_descending(row);
  return std::accumulate(row.begin(), row.begin() + std::min<int64_t>(k, row.size()), 0.0);
}

double row_gini(const std::vector<double>& row) { return row_metrics(row).gini; }

double row_below_fraction(const std::vector<double>& row, double threshold) {
  if (row.empty()) return 0.0;
  const auto below = std::count_if(row.begin(), row.end(), [&](double p) { return p < threshold; });
  return static_cast<double>(below) / static_cast<double>(row.size());
}

SparsityMetrics row_metrics(std::vector<double> row) {
  sort_descending(row);
  return metrics_from(sorted_row_stats(row.data(), static_cast<int64_t>(row.size())).data());
}

SparsityAccumulator::SparsityAccumulator(int64_t layers, int64_t heads, int64_t cls_token)
    : layers_(layers), heads_(heads), cls_token_(cls_token), sums_(layers * heads), cls_sums_(layers * heads) {
  check(layers > 0 && heads > 0, "sparsity: need at least one layer and head, got {} and {}", layers, heads);
}

void SparsityAccumulator::add(int64_t layer, const Tensor& probs, const Tensor& keep_mask) {
  check(layer >= 0 && layer < layers_, "sparsity: layer {} is out of range ({} layers)", layer, layers_);
  check(probs.dim() == 4 && probs.size(1) == heads_ && probs.size(2) == probs.size(3),
        "sparsity: layer {}: attention probabilities must be [B, {}, N, N], got {}", layer, heads_, probs);
  // Per (image, head) sums on the probabilities' device; only they come to the
  // host, where they are added in image order.
  const Tensor sums = attention_row_stat_sums(probs, keep_mask, cls_token_).to(Device::cpu());
  const double* values = sums.data<double>();
  for (int64_t bh = 0; bh < sums.size(0) * heads_; ++bh) {
    add_into(sums_[layer * heads_ + bh % heads_], metrics_from(values + bh * 2 * kRowStats));
    add_into(cls_sums_[layer * heads_ + bh % heads_], metrics_from(values + (bh * 2 + 1) * kRowStats));
  }
}

SparsityMetrics SparsityAccumulator::mean_over_heads(const std::vector<SparsityMetrics>& sums, int64_t i) const {
  check(i >= 0 && i < layers_, "sparsity: layer {} is out of range ({} layers)", i, layers_);
  SparsityMetrics total;
  for (int64_t h = 0; h < heads_; ++h) add_into(total, sums[i * heads_ + h]);
  return mean_of(total);
}

SparsityMetrics SparsityAccumulator::layer(int64_t i) const { return mean_over_heads(sums_, i); }

SparsityMetrics SparsityAccumulator::cls(int64_t i) const { return mean_over_heads(cls_sums_, i); }

SparsityMetrics SparsityAccumulator::head(int64_t i, int64_t h) const {
  check(i >= 0 && i < layers_ && h >= 0 && h < heads_, "sparsity: no layer {} head {}", i, h);
  return mean_of(sums_[i * heads_ + h]);
}

SparsityMetrics SparsityAccumulator::cls_head(int64_t i, int64_t h) const {
  check(i >= 0 && i < layers_ && h >= 0 && h < heads_, "sparsity: no layer {} head {}", i, h);
  return mean_of(cls_sums_[i * heads_ + h]);
}

}  // namespace engine

#include "train/sparsity.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

namespace engine {

namespace {

// Prefix sums may fall short of the target mass by this much and still count, so
// that exact ties survive rounding: nine of ten uniform 0.1s sum to 0.8999999999999999.
constexpr double kMassTolerance = 1e-9;

void sort_descending(std::vector<double>& row) { std::sort(row.begin(), row.end(), std::greater<>()); }

// The helpers below take a row sorted in descending order.

double entropy_sorted(const std::vector<double>& p) {
  double h = 0;
  for (double v : p) h -= v > 0 ? v * std::log(v) : 0.0;
  return h;
}

int64_t k_for_mass_sorted(const std::vector<double>& p, double mass) {
  double sum = 0;
  for (size_t k = 0; k < p.size(); ++k) {
    sum += p[k];
    if (sum >= mass - kMassTolerance) return static_cast<int64_t>(k) + 1;
  }
  return static_cast<int64_t>(p.size());
}

double top_mass_sorted(const std::vector<double>& p, int64_t k) {
  return std::accumulate(p.begin(), p.begin() + std::min<int64_t>(k, p.size()), 0.0);
}

// p_(i), the i-th smallest (1-based), is p[n - i] in descending order, so its
// weight 2i - n - 1 becomes n - 2j - 1 for p[j].
double gini_sorted(const std::vector<double>& p) {
  const double n = static_cast<double>(p.size());
  double weighted = 0, total = 0;
  for (size_t j = 0; j < p.size(); ++j) {
    weighted += (n - 2.0 * j - 1) * p[j];
    total += p[j];
  }
  return total > 0 ? weighted / (n * total) : 0.0;
}

SparsityMetrics sorted_row_metrics(const std::vector<double>& p) {
  const int64_t n = static_cast<int64_t>(p.size());
  SparsityMetrics m;
  m.rows = 1;
  m.tokens = static_cast<double>(n);
  m.entropy = entropy_sorted(p);
  m.entropy_norm = n > 1 ? m.entropy / std::log(static_cast<double>(n)) : 0.0;
  m.k50 = static_cast<double>(k_for_mass_sorted(p, 0.5));
  m.k90 = static_cast<double>(k_for_mass_sorted(p, 0.9));
  m.k99 = static_cast<double>(k_for_mass_sorted(p, 0.99));
  m.top1_mass = top_mass_sorted(p, 1);
  m.topk10_mass = top_mass_sorted(p, (n + 9) / 10);  // ceil(n / 10) without rounding error
  m.gini = gini_sorted(p);
  m.below_tenth_uniform = row_below_fraction(p, 0.1 / static_cast<double>(n));
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

// The kept token indices of every image: all of 0..n-1 without a mask.
std::vector<std::vector<int64_t>> kept_tokens(const Tensor& keep_mask, int64_t batch, int64_t n) {
  std::vector<std::vector<int64_t>> kept(batch);
  if (!keep_mask.defined()) {
    for (auto& tokens : kept) {
      tokens.resize(n);
      std::iota(tokens.begin(), tokens.end(), 0);
    }
    return kept;
  }
  check(keep_mask.dtype() == DType::U8 && keep_mask.shape() == Shape{batch, n},
        "sparsity: the keep mask must be uint8 [{}, {}] (images, tokens), got {}", batch, n, keep_mask);
  const Tensor mask = keep_mask.to(Device::cpu()).contiguous();
  const uint8_t* values = mask.data<uint8_t>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < n; ++t) {
      if (values[b * n + t]) kept[b].push_back(t);
    }
  }
  return kept;
}

// The kept columns of one row as doubles, sorted descending; renormalised to sum 1
// when some columns were dropped.
void gather_row(const float* full_row, const std::vector<int64_t>& columns, int64_t n, std::vector<double>& row) {
  row.resize(columns.size());
  for (size_t j = 0; j < columns.size(); ++j) row[j] = full_row[columns[j]];
  if (static_cast<int64_t>(columns.size()) < n) {
    const double total = std::accumulate(row.begin(), row.end(), 0.0);
    if (total > 0) {
      for (double& v : row) v /= total;
    }
  }
  sort_descending(row);
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

double row_entropy(const std::vector<double>& row) { return entropy_sorted(row); }

int64_t row_k_for_mass(std::vector<double> row, double mass) {
  sort_descending(row);
  return k_for_mass_sorted(row, mass);
}

double row_top_mass(std::vector<double> row, int64_t k) {
  sort_descending(row);
  return top_mass_sorted(row, k);
}

double row_gini(std::vector<double> row) {
  sort_descending(row);
  return gini_sorted(row);
}

double row_below_fraction(const std::vector<double>& row, double threshold) {
  if (row.empty()) return 0.0;
  const auto below = std::count_if(row.begin(), row.end(), [&](double p) { return p < threshold; });
  return static_cast<double>(below) / static_cast<double>(row.size());
}

SparsityMetrics row_metrics(std::vector<double> row) {
  sort_descending(row);
  return sorted_row_metrics(row);
}

SparsityAccumulator::SparsityAccumulator(int64_t layers, int64_t heads, int64_t cls_token)
    : layers_(layers), heads_(heads), cls_token_(cls_token), sums_(layers * heads), cls_sums_(layers * heads) {
  check(layers > 0 && heads > 0, "sparsity: need at least one layer and head, got {} and {}", layers, heads);
}

void SparsityAccumulator::add(int64_t layer, const Tensor& probs_any, const Tensor& keep_mask) {
  check(layer >= 0 && layer < layers_, "sparsity: layer {} is out of range ({} layers)", layer, layers_);
  check(probs_any.dim() == 4 && probs_any.size(1) == heads_ && probs_any.size(2) == probs_any.size(3),
        "sparsity: layer {}: attention probabilities must be [B, {}, N, N], got {}", layer, heads_,
        probs_any);
  const int64_t batch = probs_any.size(0), n = probs_any.size(2), heads = heads_;
  const std::vector<std::vector<int64_t>> kept = kept_tokens(keep_mask, batch, n);
  const Tensor probs = probs_any.to(Device::cpu()).to(DType::F32).contiguous();
  const float* values = probs.data<float>();

  // One partial sum per (image, head), each summed in row order by one thread, then
  // added in a fixed order: the result does not depend on the number of threads.
  std::vector<SparsityMetrics> partial(batch * heads), cls_partial(batch * heads);
#pragma omp parallel
  {
    std::vector<double> row;
#pragma omp for schedule(dynamic)
    for (int64_t bh = 0; bh < batch * heads; ++bh) {
      const std::vector<int64_t>& tokens = kept[bh / heads];
      for (int64_t q : tokens) {
        gather_row(values + (bh * n + q) * n, tokens, n, row);
        const SparsityMetrics m = sorted_row_metrics(row);
        add_into(partial[bh], m);
        if (q == cls_token_) add_into(cls_partial[bh], m);
      }
    }
  }
  for (int64_t bh = 0; bh < batch * heads; ++bh) {
    add_into(sums_[layer * heads + bh % heads], partial[bh]);
    add_into(cls_sums_[layer * heads + bh % heads], cls_partial[bh]);
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

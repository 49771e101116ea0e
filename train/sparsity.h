// Attention sparsity: how concentrated the softmax rows of each layer and head
// are, averaged over query rows and images (definitions in docs/SPARSITY.md).
//
// A row is one query token's probabilities p_1..p_n over the n kept key tokens
// (all tokens unless a keep mask says otherwise). Per row:
//   entropy             -sum p ln p (nats; 0 ln 0 = 0)
//   entropy_norm        entropy / ln n (0 when n = 1)
//   k50, k90, k99       smallest k whose k largest p sum to >= 0.5 / 0.9 / 0.99
//   top1_mass           the largest p
//   topk10_mass         sum of the ceil(n / 10) largest p
//   gini                sum_i (2i - n - 1) p_(i) / (n sum p), p_(1) <= ... <= p_(n)
//                       (0 for a uniform row, (n - 1) / n for a one-hot row)
//   below_tenth_uniform fraction of the n probabilities below 0.1 / n
// Every reported value is the mean of the per-row value over the rows counted.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace engine {

struct SparsityMetrics {
  int64_t rows = 0;     // rows averaged
  double tokens = 0;    // n, the kept tokens of a row
  double entropy = 0;
  double entropy_norm = 0;
  double k50 = 0, k90 = 0, k99 = 0;
  double top1_mass = 0;
  double topk10_mass = 0;
  double gini = 0;
  double below_tenth_uniform = 0;

  // The averaged fields with their output names (JSON keys, CSV columns), in order.
  using Field = std::pair<const char*, double SparsityMetrics::*>;
  static const std::vector<Field>& fields();
};

// Per-row metrics of hand-made or real rows, in any order (see the definitions above).
double row_entropy(const std::vector<double>& row);
int64_t row_k_for_mass(std::vector<double> row, double mass);
double row_top_mass(std::vector<double> row, int64_t k);  // sum of the k largest
double row_gini(const std::vector<double>& row);
double row_below_fraction(const std::vector<double>& row, double threshold);
// All metrics of one row: a SparsityMetrics with rows = 1.
SparsityMetrics row_metrics(std::vector<double> row);

// Streaming float64 sums of the row metrics, per (layer, head), for every kept
// query row and separately for the class-token row. Memory does not grow with
// the number of images.
class SparsityAccumulator {
 public:
  // cls_token: the class token's index among the tokens, or -1 when there is none.
  SparsityAccumulator(int64_t layers, int64_t heads, int64_t cls_token = 0);

  // probs: softmax attention [B, H, N, N] of one layer (any device, read as float32).
  // keep_mask: optional uint8 [B, N], non-zero = kept (A-ViT halting); undefined = all
  // kept. Only rows of kept queries count and only kept key columns are read
  // (renormalised to sum to 1 when tokens were dropped), so n is the image's number of
  // kept tokens.
  void add(int64_t layer, const Tensor& probs, const Tensor& keep_mask = Tensor());

  SparsityMetrics layer(int64_t i) const;           // every head's rows
  SparsityMetrics head(int64_t i, int64_t h) const;
  SparsityMetrics cls(int64_t i) const;             // the class-token row, every head
  SparsityMetrics cls_head(int64_t i, int64_t h) const;

  int64_t layers() const { return layers_; }
  int64_t heads() const { return heads_; }
  bool has_cls() const { return cls_token_ >= 0; }

 private:
  SparsityMetrics mean_over_heads(const std::vector<SparsityMetrics>& sums, int64_t i) const;

  int64_t layers_, heads_, cls_token_;
  std::vector<SparsityMetrics> sums_, cls_sums_;  // [layer * heads + head], sums (not means)
};

}  // namespace engine

// Which transformer layers to replace, as the configs spell it, and the rank
// statistics of the group-wise experiment.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace engine {

// Layer specs: "3,5,7" (explicit), "all", or "sparsest:K" (the K first of
// `ranking`, which lists layers from sparsest to densest). The result is
// sorted; duplicates and out-of-range indices are errors naming the spec.
std::vector<int64_t> select_layers(const std::string& spec, int64_t depth, const std::vector<int64_t>& ranking);

// Group specs for `experiment = groupwise`: "each" (one group per layer),
// "0-2;3-5;7" (ranges and single layers, ';'-separated), or "by_sparsity:G"
// (the ranking cut into G consecutive groups of near-equal size).
std::vector<std::vector<int64_t>> parse_groups(const std::string& spec, int64_t depth,
                                               const std::vector<int64_t>& ranking);

// True when a spec needs the sparsity ranking ("sparsest:K", "by_sparsity:G").
bool needs_ranking(const std::string& spec);

// Spearman's rank correlation (ties get average ranks); NaN when either
// side is constant or there are fewer than two points.
double spearman_rho(const std::vector<double>& x, const std::vector<double>& y);

// Two-sided p-value of Spearman's rho against "no association": the share of
// random pairings of x with y (y's values shuffled; `permutations` of them,
// drawn from `seed`) whose |rho| is at least the observed one, counting the
// observed pairing itself ((hits + 1) / (permutations + 1)). NaN where rho is.
double spearman_permutation_p(const std::vector<double>& x, const std::vector<double>& y,
                              int64_t permutations = 100000, uint64_t seed = 0);

// The mean of repeated measurements (one per seed) and their sample standard
// deviation (n - 1 in the denominator; 0 for a single value).
struct Spread {
  double mean = 0, std = 0;
};
Spread spread_of(const std::vector<double>& values);

}  // namespace engine

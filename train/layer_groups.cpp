#include "train/layer_groups.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <sstream>

#include "engine/error.h"

namespace engine {

namespace {

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  for (std::string part; std::getline(stream, part, separator);) {
    part.erase(0, part.find_first_not_of(" \t"));
    part.erase(part.find_last_not_of(" \t") + 1);
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

int64_t parse_index(const std::string& text, const std::string& spec) {
  size_t used = 0;
  int64_t value = -1;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  check(used == text.size() && !text.empty(), "layer spec '{}': '{}' is not a layer index", spec, text);
  return value;
}

// The count after "prefix:" in specs such as "sparsest:4".
int64_t parse_count(const std::string& spec, const std::string& prefix, int64_t depth) {
  const int64_t count = parse_index(spec.substr(prefix.size()), spec);
  check(count >= 1 && count <= depth, "layer spec '{}': count must be in 1..{}", spec, depth);
  return count;
}

void check_ranking(const std::vector<int64_t>& ranking, int64_t depth, const std::string& spec) {
  check(static_cast<int64_t>(ranking.size()) == depth, "layer spec '{}' needs a sparsity ranking of all {} layers",
        spec, depth);
}

std::vector<int64_t> checked_sorted(std::vector<int64_t> layers, int64_t depth, const std::string& spec) {
  std::sort(layers.begin(), layers.end());
  for (size_t i = 0; i < layers.size(); ++i) {
    check(layers[i] >= 0 && layers[i] < depth, "layer spec '{}': layer {} is outside 0..{}", spec, layers[i],
          depth - 1);
    check(i == 0 || layers[i] != layers[i - 1], "layer spec '{}': layer {} is listed twice", spec, layers[i]);
  }
  check(!layers.empty(), "layer spec '{}' selects no layer", spec);
  return layers;
}

}  // namespace

bool needs_ranking(const std::string& spec) {
  return spec.rfind("sparsest:", 0) == 0 || spec.rfind("by_sparsity:", 0) == 0;
}

std::vector<int64_t> select_layers(const std::string& spec, int64_t depth, const std::vector<int64_t>& ranking) {
  if (spec == "all") {
    std::vector<int64_t> all(depth);
    std::iota(all.begin(), all.end(), 0);
    return all;
  }
  if (spec.rfind("sparsest:", 0) == 0) {
    check_ranking(ranking, depth, spec);
    const int64_t count = parse_count(spec, "sparsest:", depth);
    return checked_sorted({ranking.begin(), ranking.begin() + count}, depth, spec);
  }
  std::vector<int64_t> layers;
  for (const std::string& part : split(spec, ',')) layers.push_back(parse_index(part, spec));
  return checked_sorted(layers, depth, spec);
}

std::vector<std::vector<int64_t>> parse_groups(const std::string& spec, int64_t depth,
                                               const std::vector<int64_t>& ranking) {
  std::vector<std::vector<int64_t>> groups;
  if (spec == "each") {
    for (int64_t i = 0; i < depth; ++i) groups.push_back({i});
    return groups;
  }
  if (spec.rfind("by_sparsity:", 0) == 0) {
    check_ranking(ranking, depth, spec);
    const int64_t count = parse_count(spec, "by_sparsity:", depth);
    for (int64_t g = 0; g < count; ++g) {
      std::vector<int64_t> group(ranking.begin() + depth * g / count, ranking.begin() + depth * (g + 1) / count);
      groups.push_back(checked_sorted(group, depth, spec));
    }
    return groups;
  }
  for (const std::string& part : split(spec, ';')) {
    const size_t dash = part.find('-');
    std::vector<int64_t> group;
    if (dash == std::string::npos) {
      group.push_back(parse_index(part, spec));
    } else {
      const int64_t first = parse_index(part.substr(0, dash), spec);
      const int64_t last = parse_index(part.substr(dash + 1), spec);
      check(first <= last, "group spec '{}': range '{}' runs backwards", spec, part);
      for (int64_t i = first; i <= last; ++i) group.push_back(i);
    }
    groups.push_back(checked_sorted(group, depth, spec));
    // A repeated group would count twice in Spearman's rho.
    for (size_t earlier = 0; earlier + 1 < groups.size(); ++earlier) {
      check(groups[earlier] != groups.back(), "group spec '{}': group {} ('{}') repeats group {}", spec, groups.size(),
            part, earlier + 1);
    }
  }
  check(!groups.empty(), "group spec '{}' has no group", spec);
  return groups;
}

namespace {

// Values that differ only by rounding: a group's drop is a mean over seeds,
// and two groups with the same exact mean can come out a few ulps of its
// terms apart, which near a mean of 0 is far more than an ulp of the mean.
bool equal_but_for_rounding(double a, double b) {
  return std::abs(a - b) <= 1e-12 * std::max({1.0, std::abs(a), std::abs(b)});
}

std::vector<double> average_ranks(const std::vector<double>& values) {
  std::vector<size_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return values[a] < values[b]; });
  std::vector<double> ranks(values.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && equal_but_for_rounding(values[order[j + 1]], values[order[i]])) ++j;
    for (size_t k = i; k <= j; ++k) ranks[order[k]] = (i + j) / 2.0 + 1.0;  // ties share the mean rank
    i = j + 1;
  }
  return ranks;
}

}  // namespace

namespace {

// Pearson's correlation of two rank vectors (NaN when either is constant).
double rank_correlation(const std::vector<double>& rx, const std::vector<double>& ry) {
  const double mean = (rx.size() + 1) / 2.0;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < rx.size(); ++i) {
    sxy += (rx[i] - mean) * (ry[i] - mean);
    sxx += (rx[i] - mean) * (rx[i] - mean);
    syy += (ry[i] - mean) * (ry[i] - mean);
  }
  if (sxx == 0 || syy == 0) return std::numeric_limits<double>::quiet_NaN();
  return sxy / std::sqrt(sxx * syy);
}

}  // namespace

double spearman_rho(const std::vector<double>& x, const std::vector<double>& y) {
  check(x.size() == y.size(), "spearman_rho: {} and {} values", x.size(), y.size());
  if (x.size() < 2) return std::numeric_limits<double>::quiet_NaN();
  return rank_correlation(average_ranks(x), average_ranks(y));
}

double spearman_permutation_p(const std::vector<double>& x, const std::vector<double>& y, int64_t permutations,
                              uint64_t seed) {
  const double observed = spearman_rho(x, y);
  if (std::isnan(observed)) return observed;
  const std::vector<double> rx = average_ranks(x);
  std::vector<double> ry = average_ranks(y);
  std::mt19937_64 generator(seed);
  int64_t at_least_as_strong = 0;
  for (int64_t i = 0; i < permutations; ++i) {
    std::shuffle(ry.begin(), ry.end(), generator);
    // (A relative tolerance, so that a permutation that ties the observed
    // rho is not lost to rounding.)
    at_least_as_strong += std::abs(rank_correlation(rx, ry)) >= std::abs(observed) * (1 - 1e-12);
  }
  return (at_least_as_strong + 1.0) / (permutations + 1.0);
}

Spread spread_of(const std::vector<double>& values) {
  check(!values.empty(), "spread_of: no values");
  Spread spread;
  for (double v : values) spread.mean += v / values.size();
  if (values.size() < 2) return spread;
  double squares = 0;
  for (double v : values) squares += (v - spread.mean) * (v - spread.mean);
  spread.std = std::sqrt(squares / (values.size() - 1));
  return spread;
}

}  // namespace engine

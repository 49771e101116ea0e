#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "engine/error.h"
#include "tests/expect_error.h"
#include "train/layer_groups.h"

namespace engine {
namespace {

const std::vector<int64_t> kRanking = {7, 2, 9, 0, 1, 3, 4, 5, 6, 8, 10, 11};  // sparsest first

TEST(LayerGroups, SelectLayers) {
  EXPECT_EQ(select_layers("5, 3,7", 12, {}), (std::vector<int64_t>{3, 5, 7}));
  EXPECT_EQ(select_layers("sparsest:3", 12, kRanking), (std::vector<int64_t>{2, 7, 9}));
  EXPECT_EQ(select_layers("all", 3, {}), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_THROW(select_layers("3,3", 12, {}), Error);
  EXPECT_THROW(select_layers("12", 12, {}), Error);
  EXPECT_THROW(select_layers("x", 12, {}), Error);
  EXPECT_THROW(select_layers("sparsest:4", 12, {}), Error);  // no ranking
  EXPECT_THROW(select_layers("sparsest:13", 12, kRanking), Error);
  EXPECT_TRUE(needs_ranking("sparsest:2"));
  EXPECT_FALSE(needs_ranking("1,2"));
}

TEST(LayerGroups, ParseGroups) {
  EXPECT_EQ(parse_groups("each", 3, {}), (std::vector<std::vector<int64_t>>{{0}, {1}, {2}}));
  EXPECT_EQ(parse_groups("0-2; 5;3-4", 12, {}), (std::vector<std::vector<int64_t>>{{0, 1, 2}, {5}, {3, 4}}));
  auto by_sparsity = parse_groups("by_sparsity:4", 12, kRanking);
  EXPECT_EQ(by_sparsity, (std::vector<std::vector<int64_t>>{{2, 7, 9}, {0, 1, 3}, {4, 5, 6}, {8, 10, 11}}));
  EXPECT_THROW(parse_groups("3-1", 12, {}), Error);
  // The same group twice (3 and 3-3 are one group); overlapping groups are fine.
  testing::expect_error_mentioning([] { parse_groups("0-2;3;3-3", 12, {}); }, {"group 3 ('3-3') repeats group 2"});
  EXPECT_EQ(parse_groups("0-2;2-3", 12, {}).size(), 2u);
}

TEST(LayerGroups, SpearmanRho) {
  EXPECT_NEAR(spearman_rho({1, 2, 3, 4}, {10, 20, 30, 40}), 1.0, 1e-12);
  EXPECT_NEAR(spearman_rho({1, 2, 3, 4}, {4, 3, 2, 1}), -1.0, 1e-12);
  // Hand-computed: ranks x = 1,2,3,4,5; y = 2,1,4,3,5 -> rho = 1 - 6*4/(5*24) = 0.8.
  EXPECT_NEAR(spearman_rho({1, 2, 3, 4, 5}, {5, 1, 9, 7, 11}), 0.8, 1e-12);
  // Ties take average ranks: x ranks 1.5,1.5,3 ; y ranks 1,2,3 -> Pearson of ranks = 0.8660254.
  EXPECT_NEAR(spearman_rho({1, 1, 2}, {1, 2, 3}), std::sqrt(3.0) / 2, 1e-9);
  EXPECT_TRUE(std::isnan(spearman_rho({1, 1}, {1, 2})));
  // Two groups' mean drops over 3 seeds (points; a teacher with 8,091 of
  // 10,000 right, hybrids with 8,062, 8,051, 8,038 and 8,061, 8,045, 8,045)
  // whose exact means are equal, though their floating-point means are not:
  // still a tie.
  const double teacher = 0.8091;
  auto mean_drop = [&](std::vector<double> top1) {
    for (double& t : top1) t = (teacher - t) * 100;
    return spread_of(top1).mean;
  };
  const double tied_a = mean_drop({0.8062, 0.8051, 0.8038}), tied_b = mean_drop({0.8061, 0.8045, 0.8045});
  ASSERT_NE(tied_a, tied_b) << "the case needs means that differ by rounding";
  EXPECT_NEAR(spearman_rho({30, 31, 32}, {tied_a, tied_b, 0.91}), std::sqrt(3.0) / 2, 1e-9);
  // The same near a mean drop of 0, where the rounding is large against the mean itself.
  const double near_zero_a = mean_drop({0.8023, 0.8131, 0.8120}), near_zero_b = mean_drop({0.8128, 0.8094, 0.8052});
  ASSERT_NE(near_zero_a, near_zero_b);
  EXPECT_NEAR(spearman_rho({30, 31, 32}, {near_zero_a, near_zero_b, 0.91}), std::sqrt(3.0) / 2, 1e-9);
}

// The permutation p-value against the exact one: every pairing of 6 points enumerated.
TEST(LayerGroups, SpearmanPermutationPMatchesExactEnumeration) {
  const std::vector<double> x = {0.3, 1.2, 2.5, 0.9, 4.1, 3.3}, y = {1.0, 0.2, 2.2, 0.1, 3.9, 1.7};
  const double observed = std::abs(spearman_rho(x, y));
  std::vector<double> permuted = y;
  std::sort(permuted.begin(), permuted.end());
  int hits = 0, pairings = 0;
  do {
    hits += std::abs(spearman_rho(x, permuted)) >= observed - 1e-12;
    ++pairings;
  } while (std::next_permutation(permuted.begin(), permuted.end()));
  ASSERT_EQ(pairings, 720);
  const double exact = static_cast<double>(hits) / pairings;
  ASSERT_GT(exact, 0.01);
  ASSERT_LT(exact, 0.5);
  EXPECT_NEAR(spearman_permutation_p(x, y, 200000, 7), exact, 0.005);
  // Perfect order among 4 points: only the identity and the reversal reach |rho| = 1.
  EXPECT_NEAR(spearman_permutation_p({1, 2, 3, 4}, {10, 20, 30, 40}, 200000, 3), 2.0 / 24, 0.003);
  EXPECT_TRUE(std::isnan(spearman_permutation_p({1, 1, 1}, {1, 2, 3})));
}

TEST(LayerGroups, SpreadIsTheMeanAndTheSampleStandardDeviation) {
  const Spread three = spread_of({2.0, 4.0, 9.0});  // mean 5; squares 9 + 1 + 16 = 26 over n - 1 = 2
  EXPECT_DOUBLE_EQ(three.mean, 5.0);
  EXPECT_DOUBLE_EQ(three.std, std::sqrt(13.0));
  const Spread one = spread_of({-1.5});
  EXPECT_DOUBLE_EQ(one.mean, -1.5);
  EXPECT_EQ(one.std, 0.0);
  EXPECT_THROW(spread_of({}), Error);
}

// A count that does not divide the depth: the groups take the ranking in runs
// of depth * g / count, sizes 2, 2, 3, 2, 3 for 5 groups of 12 layers, every
// layer in exactly one group.
TEST(LayerGroups, BySparsitySplitsAnUnevenDepthWithoutLosingLayers) {
  const auto groups = parse_groups("by_sparsity:5", 12, kRanking);
  EXPECT_EQ(groups, (std::vector<std::vector<int64_t>>{{2, 7}, {0, 9}, {1, 3, 4}, {5, 6}, {8, 10, 11}}));
  std::vector<int64_t> all;
  for (const auto& group : groups) all.insert(all.end(), group.begin(), group.end());
  std::sort(all.begin(), all.end());
  for (int64_t i = 0; i < 12; ++i) EXPECT_EQ(all.at(i), i);
  // One group per layer in ranking order, and one group of all.
  const auto each = parse_groups("by_sparsity:12", 12, kRanking);
  for (size_t g = 0; g < 12; ++g) EXPECT_EQ(each[g], std::vector<int64_t>{kRanking[g]});
  EXPECT_EQ(parse_groups("by_sparsity:1", 12, kRanking).front().size(), 12u);
}

// Entries may carry spaces and a separator may be doubled or trail; anything
// else that is not an index in 0..depth-1 is an error naming the spec.
TEST(LayerGroups, SpecsTakeSpacesAndEmptyEntriesButNothingElse) {
  EXPECT_EQ(select_layers("5 , 3,,", 12, {}), (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(parse_groups(" 0-2 ;; 4 ;", 12, {}), (std::vector<std::vector<int64_t>>{{0, 1, 2}, {4}}));
  testing::expect_error_mentioning([] { select_layers("3x", 12, {}); }, {"'3x'", "'3x' is not a layer index"});
  testing::expect_error_mentioning([] { select_layers("4,-1", 12, {}); }, {"'4,-1'", "layer -1 is outside 0..11"});
  testing::expect_error_mentioning([] { select_layers(" , ", 12, {}); }, {"' , ' selects no layer"});
  testing::expect_error_mentioning([] { parse_groups(";", 12, {}); }, {"';' has no group"});
  testing::expect_error_mentioning([] { parse_groups("1-12", 12, {}); }, {"layer 12 is outside 0..11"});
  // A repeat of the very first group is found too.
  testing::expect_error_mentioning([] { parse_groups("3;0-1;3-3", 12, {}); }, {"group 3 ('3-3') repeats group 1"});
}

// "sparsest:K" and "by_sparsity:G" need a count in 1..depth and a ranking of
// exactly the model's layers.
TEST(LayerGroups, RankedSpecsNeedACountAndAWholeRanking) {
  EXPECT_TRUE(needs_ranking("by_sparsity:3"));
  EXPECT_FALSE(needs_ranking("each"));
  EXPECT_FALSE(needs_ranking("all"));
  testing::expect_error_mentioning([] { select_layers("sparsest:0", 12, kRanking); },
                                   {"'sparsest:0'", "count must be in 1..12"});
  testing::expect_error_mentioning([] { parse_groups("by_sparsity:0", 12, kRanking); },
                                   {"'by_sparsity:0'", "count must be in 1..12"});
  std::vector<int64_t> longer = kRanking;
  longer.push_back(12);
  testing::expect_error_mentioning([&] { select_layers("sparsest:2", 12, longer); },
                                   {"needs a sparsity ranking of all 12 layers"});
  testing::expect_error_mentioning([&] { parse_groups("by_sparsity:2", 12, longer); },
                                   {"needs a sparsity ranking of all 12 layers"});
}

// Only values that differ by rounding tie: 1 and 1 + 1e-9 are two values.
// Ranks x 1, 2, 3 against y 2, 3, 1: rho = 1 - 6 (1 + 1 + 4) / (3 (9 - 1)) = -0.5
// (as a tie, y's ranks 2.5, 2.5, 1 would give -sqrt(3) / 2).
TEST(LayerGroups, SpearmanTiesOnlyRoundingAndNeedsPairs) {
  EXPECT_NEAR(spearman_rho({1, 2, 3}, {1.0, 1.0 + 1e-9, 0.5}), -0.5, 1e-12);
  testing::expect_error_mentioning([] { spearman_rho({1, 2}, {1, 2, 3}); }, {"2 and 3 values"});
}

// The p-value is two-sided, counts the observed pairing (so with no
// permutations it is 1), and its permutations are drawn from the seed.
TEST(LayerGroups, SpearmanPermutationPIsTwoSidedAndSeeded) {
  EXPECT_NEAR(spearman_permutation_p({1, 2, 3, 4}, {40, 30, 20, 10}, 200000, 3), 2.0 / 24, 0.003);
  EXPECT_EQ(spearman_permutation_p({1, 2, 3, 4}, {40, 30, 20, 10}, 0), 1.0);
  const std::vector<double> x = {0.3, 1.2, 2.5, 0.9, 4.1, 3.3}, y = {1.0, 0.2, 2.2, 0.1, 3.9, 1.7};
  EXPECT_EQ(spearman_permutation_p(x, y, 999, 5), spearman_permutation_p(x, y, 999, 5));
  EXPECT_NE(spearman_permutation_p(x, y, 999, 5), spearman_permutation_p(x, y, 999, 6));
}

}  // namespace
}  // namespace engine

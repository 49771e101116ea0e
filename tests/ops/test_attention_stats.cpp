// attention_row_stat_sums on the CPU, the op's contract on hand-made rows:
// per image and head the sums over the kept query rows and the class token's
// row apart; a keep mask drops rows, drops and renormalises columns and
// shrinks n; no class token (-1) or a dropped one gives zeros; the argument
// errors. (The statistics of a row are checked in tests/test_sparsity.cpp,
// the CUDA kernel against this one in tests/cuda/.)
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "engine/ops/attention_stats/attention_stats.h"
#include "tests/ops/op_test.h"

namespace engine {
namespace {

using Row = std::vector<double>;

// The statistics of a row as the op computes them: sorted.
RowStats stats_of(Row row) {
  std::sort(row.begin(), row.end(), std::greater<>());
  return sorted_row_stats(row.data(), static_cast<int64_t>(row.size()));
}

void expect_stats(const Tensor& sums, int64_t image, int64_t head, int64_t which, const RowStats& expected,
                  const std::string& what) {
  const std::vector<double> all = sums.to_doubles();
  const int64_t heads = sums.size(1);
  for (int i = 0; i < kRowStats; ++i) {
    EXPECT_NEAR(all[((image * heads + head) * 2 + which) * kRowStats + i], expected[i], 1e-12)
        << what << ", statistic " << i;
  }
}

RowStats sum(const std::vector<RowStats>& rows) {
  RowStats total{};
  for (const RowStats& r : rows) {
    for (int i = 0; i < kRowStats; ++i) total[i] += r[i];
  }
  return total;
}

// Image 0 and image 1, one head, three tokens each (rows in query order).
Tensor probs() {
  return Tensor::from_vector(std::vector<float>{0.5f, 0.3f, 0.2f, 0.1f, 0.1f, 0.8f, 0.6f, 0.2f, 0.2f,  //
                                                0.2f, 0.7f, 0.1f, 0.3f, 0.3f, 0.4f, 0.05f, 0.05f, 0.9f},
                             {2, 1, 3, 3});
}

// The rows of probs() as the op reads them (float32 values as doubles).
std::vector<Row> rows_of_probs() {
  const std::vector<double> values = probs().to_doubles();
  std::vector<Row> rows;
  for (size_t q = 0; q < values.size(); q += 3) rows.emplace_back(values.begin() + q, values.begin() + q + 3);
  return rows;
}
const std::vector<Row> kRows = rows_of_probs();

TEST(AttentionStats, SumsKeptRowsPerImageAndHeadAndTheClassRowApart) {
  const Tensor sums = attention_row_stat_sums(probs(), Tensor(), 0);
  ASSERT_EQ(sums.shape(), (Shape{2, 1, 2, kRowStats}));
  EXPECT_EQ(sums.dtype(), DType::F64);
  expect_stats(sums, 0, 0, 0, sum({stats_of(kRows[0]), stats_of(kRows[1]), stats_of(kRows[2])}), "image 0");
  expect_stats(sums, 1, 0, 0, sum({stats_of(kRows[3]), stats_of(kRows[4]), stats_of(kRows[5])}), "image 1");
  expect_stats(sums, 0, 0, 1, stats_of(kRows[0]), "image 0 class row");
  expect_stats(sums, 1, 0, 1, stats_of(kRows[3]), "image 1 class row");
  // The class token may be any token: the last one here.
  expect_stats(attention_row_stat_sums(probs(), Tensor(), 2), 1, 0, 1, stats_of(kRows[5]), "class token 2");
}

TEST(AttentionStats, KeepMaskDropsRowsAndColumnsAndRenormalises) {
  // Image 0 keeps all three tokens; image 1 drops token 1: its rows 0 and 2
  // count, over columns 0 and 2, renormalised (n = 2).
  const Tensor keep = Tensor::from_vector(std::vector<uint8_t>{1, 1, 1, 1, 0, 1}, {2, 3});
  const Tensor sums = attention_row_stat_sums(probs(), keep, 0);
  auto stats_kept = [](const Row& row) {
    const double total = row[0] + row[2];
    return stats_of({row[0] / total, row[2] / total});
  };
  expect_stats(sums, 0, 0, 0, sum({stats_of(kRows[0]), stats_of(kRows[1]), stats_of(kRows[2])}), "image 0");
  expect_stats(sums, 1, 0, 0, sum({stats_kept(kRows[3]), stats_kept(kRows[5])}), "image 1");
  EXPECT_EQ(sums.to_doubles()[(1 * 2 + 0) * kRowStats + kRowCount], 2);
  EXPECT_EQ(sums.to_doubles()[(1 * 2 + 0) * kRowStats + kRowTokens], 4);  // n = 2, twice
}

TEST(AttentionStats, NoOrADroppedClassTokenGivesZeros) {
  const RowStats zeros{};
  const Tensor without = attention_row_stat_sums(probs(), Tensor(), -1);
  expect_stats(without, 0, 0, 1, zeros, "no class token");
  expect_stats(without, 0, 0, 0, sum({stats_of(kRows[0]), stats_of(kRows[1]), stats_of(kRows[2])}),
               "rows without a class token");
  const Tensor keep = Tensor::from_vector(std::vector<uint8_t>{0, 1, 1, 1, 1, 1}, {2, 3});
  expect_stats(attention_row_stat_sums(probs(), keep, 0), 0, 0, 1, zeros, "dropped class token");
}

TEST(AttentionStats, ArgumentErrorsNameTheProblem) {
  expect_error_mentioning([] { attention_row_stat_sums(Tensor::zeros({2, 1, 3, 4}), Tensor(), 0); },
                          {"[B, H, N, N]", "[2, 1, 3, 4]"});
  expect_error_mentioning([] { attention_row_stat_sums(probs(), Tensor::ones({2, 3}), 0); },
                          {"keep mask must be uint8 [2, 3]"});
  expect_error_mentioning(
      [] { attention_row_stat_sums(probs(), Tensor::from_vector(std::vector<uint8_t>{1, 1, 1}, {1, 3}), 0); },
      {"keep mask", "[1, 3]"});
  expect_error_mentioning([] { attention_row_stat_sums(probs(), Tensor(), 3); }, {"class token 3", "3 tokens"});
  expect_error_mentioning([] { attention_row_stat_sums(Tensor::zeros({1, 1, 2, 2}, DType::I64), Tensor(), 0); },
                          {"floating point", "int64"});
}

}  // namespace
}  // namespace engine

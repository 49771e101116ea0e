// Attention sparsity: each metric on hand-made rows, keep masks, averaging over
// images and heads, the whole analysis against an independent implementation on
// the PyTorch fixture's attention probabilities, and the report folder.
#include <set>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <numeric>
#include <sstream>

#include <nlohmann/json.hpp>

#include "data/files.h"
#include "data/image.h"
#include "engine/random.h"
#include "models/vit_checkpoint.h"
#include "tests/expect_error.h"
#include "tests/shared_data.h"
#include "train/sparsity.h"
#include "train/sparsity_report.h"

namespace engine {
namespace {

namespace fs = std::filesystem;
using Rows = std::vector<std::vector<double>>;

void expect_metrics_near(const SparsityMetrics& actual, const SparsityMetrics& expected, double tolerance,
                         const std::string& what) {
  EXPECT_EQ(actual.rows, expected.rows) << what;
  for (const auto& [name, field] : SparsityMetrics::fields()) {
    EXPECT_NEAR(actual.*field, expected.*field, tolerance) << what << ": " << name;
  }
}

// ---- per-row metrics on hand-made rows ----

TEST(SparsityRow, UniformRow) {
  const std::vector<double> row(10, 0.1);
  const SparsityMetrics m = row_metrics(row);
  EXPECT_NEAR(m.entropy, std::log(10.0), 1e-12);
  EXPECT_NEAR(m.entropy_norm, 1.0, 1e-12);
  EXPECT_EQ(m.k50, 5);
  EXPECT_EQ(m.k90, 9);  // 9 x 0.1 rounds to 0.8999999999999999; the tie still counts
  EXPECT_EQ(m.k99, 10);
  EXPECT_DOUBLE_EQ(m.top1_mass, 0.1);
  EXPECT_DOUBLE_EQ(m.topk10_mass, 0.1);  // ceil(10 / 10) = 1 token
  EXPECT_NEAR(m.gini, 0.0, 1e-12);
  EXPECT_EQ(m.below_tenth_uniform, 0.0);
  // 65 tokens (CIFAR ViT): ceil(0.9 * 65) = 59, ceil(65 / 10) = 7.
  const std::vector<double> cifar(65, 1.0 / 65);
  EXPECT_EQ(row_k_for_mass(cifar, 0.9), 59);
  EXPECT_NEAR(row_metrics(cifar).topk10_mass, 7.0 / 65, 1e-12);
}

TEST(SparsityRow, OneHotRow) {
  const SparsityMetrics m = row_metrics({0, 0, 1, 0, 0});
  EXPECT_EQ(m.entropy, 0.0);
  EXPECT_EQ(m.entropy_norm, 0.0);
  EXPECT_EQ(m.k50, 1);
  EXPECT_EQ(m.k90, 1);
  EXPECT_EQ(m.k99, 1);
  EXPECT_EQ(m.top1_mass, 1.0);
  EXPECT_EQ(m.topk10_mass, 1.0);
  EXPECT_NEAR(m.gini, 4.0 / 5, 1e-12);  // (n - 1) / n
  EXPECT_NEAR(m.below_tenth_uniform, 4.0 / 5, 1e-12);
  EXPECT_EQ(row_metrics({1.0}).entropy_norm, 0.0);  // a single token: ln 1 = 0
}

TEST(SparsityRow, HandComputedRow) {
  const std::vector<double> row = {0.18, 0.02, 0.45, 0.35};  // unsorted on purpose
  // -(0.45 ln 0.45 + 0.35 ln 0.35 + 0.18 ln 0.18 + 0.02 ln 0.02)
  EXPECT_NEAR(row_entropy(row), 1.113670384037644, 1e-12);
  EXPECT_EQ(row_k_for_mass(row, 0.5), 2);   // 0.45 < 0.5 <= 0.80
  EXPECT_EQ(row_k_for_mass(row, 0.9), 3);   // 0.80 < 0.9 <= 0.98
  EXPECT_EQ(row_k_for_mass(row, 0.99), 4);  // 0.98 < 0.99 <= 1
  EXPECT_NEAR(row_top_mass(row, 2), 0.80, 1e-12);
  // Ascending 0.02, 0.18, 0.35, 0.45 with weights 2i - n - 1 = -3, -1, 1, 3: 1.46 / 4.
  EXPECT_NEAR(row_gini(row), 0.365, 1e-12);
  EXPECT_NEAR(row_below_fraction(row, 0.1 / 4), 0.25, 1e-12);  // only 0.02 < 0.025

  const SparsityMetrics m = row_metrics(row);
  EXPECT_EQ(m.rows, 1);
  EXPECT_EQ(m.tokens, 4);
  EXPECT_NEAR(m.entropy, 1.113670384037644, 1e-12);
  EXPECT_NEAR(m.entropy_norm, 1.113670384037644 / std::log(4.0), 1e-12);
  EXPECT_EQ(m.k50, 2);
  EXPECT_EQ(m.k90, 3);
  EXPECT_EQ(m.k99, 4);
  EXPECT_NEAR(m.top1_mass, 0.45, 1e-12);
  EXPECT_NEAR(m.topk10_mass, 0.45, 1e-12);  // ceil(4 / 10) = 1 token
  EXPECT_NEAR(m.gini, 0.365, 1e-12);
  EXPECT_NEAR(m.below_tenth_uniform, 0.25, 1e-12);
}

// The edges of the per-row helpers: k past the row takes all of it, "below"
// is strict, an empty row has nothing below.
TEST(SparsityRow, TopMassPastTheRowAndStrictlyBelow) {
  const std::vector<double> row = {0.2, 0.05, 0.75};
  EXPECT_NEAR(row_top_mass(row, 5), 1.0, 1e-12);
  EXPECT_NEAR(row_top_mass(row, int64_t{1} << 20), 1.0, 1e-12);
  EXPECT_NEAR(row_top_mass(row, 0), 0.0, 1e-12);
  EXPECT_EQ(row_below_fraction(row, 0.05), 0.0);             // 0.05 is not below 0.05
  EXPECT_NEAR(row_below_fraction(row, 0.2 + 1e-9), 2.0 / 3, 1e-12);
  EXPECT_EQ(row_below_fraction({}, 0.1), 0.0);
}

// ---- the accumulator ----

// [B, H, N, N] float32 from rows listed in (image, head, query) order.
Tensor probs_tensor(const Rows& rows, int64_t batch, int64_t heads) {
  const int64_t n = static_cast<int64_t>(rows[0].size());
  std::vector<float> values;
  for (const auto& row : rows) values.insert(values.end(), row.begin(), row.end());
  return Tensor::from_vector(values, {batch, heads, n, n});
}

// The mean of row_metrics over rows.
SparsityMetrics mean_metrics(const Rows& rows) {
  SparsityMetrics mean;
  for (const auto& row : rows) {
    const SparsityMetrics m = row_metrics(row);
    mean.rows += 1;
    for (const auto& [name, field] : SparsityMetrics::fields()) mean.*field += m.*field / rows.size();
  }
  return mean;
}

std::vector<double> as_float32(std::vector<double> row) {
  for (double& v : row) v = static_cast<float>(v);
  return row;
}

TEST(SparsityAccumulator, MaskDropsRowsAndColumnsAndShrinksN) {
  const Rows rows = {{0.5, 0.3, 0.2}, {0.1, 0.1, 0.8}, {0.6, 0.2, 0.2}};
  SparsityAccumulator acc(1, 1);
  acc.add(0, probs_tensor(rows, 1, 1), Tensor::from_vector(std::vector<uint8_t>{1, 0, 1}, {1, 3}));
  // Token 1 is dropped: row 1 does not count, column 1 is not read, the rest is
  // renormalised over the two kept tokens.
  const float r0 = 0.5f + 0.2f, r2 = 0.6f + 0.2f;
  const Rows kept = {{0.5f / r0, 0.2f / r0}, {0.6f / r2, 0.2f / r2}};
  expect_metrics_near(acc.layer(0), mean_metrics(kept), 1e-7, "layer");
  EXPECT_EQ(acc.layer(0).tokens, 2);
  EXPECT_EQ(acc.layer(0).k90, 2);
  EXPECT_NEAR(acc.layer(0).entropy_norm, mean_metrics(kept).entropy / std::log(2.0), 1e-7);
  expect_metrics_near(acc.cls(0), mean_metrics({kept[0]}), 1e-7, "cls");

  // Without a mask every row counts, as given; with the class token dropped, no cls row.
  SparsityAccumulator all(1, 1);
  all.add(0, probs_tensor(rows, 1, 1));
  expect_metrics_near(all.layer(0), mean_metrics({as_float32(rows[0]), as_float32(rows[1]), as_float32(rows[2])}),
                      1e-12, "unmasked");
  SparsityAccumulator no_cls(1, 1);
  no_cls.add(0, probs_tensor(rows, 1, 1), Tensor::from_vector(std::vector<uint8_t>{0, 1, 1}, {1, 3}));
  EXPECT_EQ(no_cls.layer(0).rows, 2);
  EXPECT_EQ(no_cls.cls(0).rows, 0);

  testing::expect_error_mentioning([&] { acc.add(0, probs_tensor(rows, 1, 1), Tensor::zeros({1, 2}, DType::U8)); },
                                   {"keep mask", "[1, 3]"});
  testing::expect_error_mentioning([&] { acc.add(1, probs_tensor(rows, 1, 1)); }, {"layer 1"});
  testing::expect_error_mentioning([&] { acc.add(0, Tensor::zeros({1, 2, 3, 3})); }, {"[B, 1, N, N]"});
}

TEST(SparsityAccumulator, AveragesOverImagesAndHeadsAcrossBatches) {
  // Two images x two heads x two queries; the first batch holds image 0, the second image 1.
  const Rows image0 = {{1, 0}, {0.5, 0.5}, {0.75, 0.25}, {0.25, 0.75}};
  const Rows image1 = {{0.5, 0.5}, {0.875, 0.125}, {0, 1}, {0.5, 0.5}};
  SparsityAccumulator acc(2, 2);
  acc.add(1, probs_tensor(image0, 1, 2));
  acc.add(1, probs_tensor(image1, 1, 2));
  Rows all = image0;
  all.insert(all.end(), image1.begin(), image1.end());
  expect_metrics_near(acc.layer(1), mean_metrics(all), 1e-12, "layer");
  expect_metrics_near(acc.head(1, 0), mean_metrics({image0[0], image0[1], image1[0], image1[1]}), 1e-12, "head 0");
  expect_metrics_near(acc.head(1, 1), mean_metrics({image0[2], image0[3], image1[2], image1[3]}), 1e-12, "head 1");
  expect_metrics_near(acc.cls(1), mean_metrics({image0[0], image0[2], image1[0], image1[2]}), 1e-12, "cls");
  expect_metrics_near(acc.cls_head(1, 1), mean_metrics({image0[2], image1[2]}), 1e-12, "cls head 1");
  EXPECT_EQ(acc.layer(0).rows, 0);  // never added
}

TEST(SparsityAccumulator, SameSumsForAnyThreadCount) {
  Rng rng(3);
  const int64_t batch = 3, heads = 4, n = 17;
  Rows rows(batch * heads * n, std::vector<double>(n));
  for (auto& row : rows) {
    for (double& v : row) v = std::pow(rng.uniform(), 4);
    const double total = std::accumulate(row.begin(), row.end(), 0.0);
    for (double& v : row) v /= total;
  }
  const Tensor probs = probs_tensor(rows, batch, heads);
  const auto layer_with_threads = [&](int threads) {
    const int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    SparsityAccumulator acc(1, heads);
    acc.add(0, probs);
    omp_set_num_threads(before);
    return acc.layer(0);
  };
  const SparsityMetrics one = layer_with_threads(1), many = layer_with_threads(3);
  for (const auto& [name, field] : SparsityMetrics::fields()) EXPECT_EQ(one.*field, many.*field) << name;
}

// A layer that saw no rows reports zeros (JSON has no NaN), and every
// out-of-range layer or head, or a shape that is not [B, H, N, N], is an error.
TEST(SparsityAccumulator, EmptyLayersAreZeroAndBadIndicesAreErrors) {
  SparsityAccumulator acc(2, 2);
  acc.add(0, probs_tensor({{0.5, 0.5}, {1, 0}, {0.25, 0.75}, {0.5, 0.5}}, 1, 2));
  for (const SparsityMetrics& empty : {acc.layer(1), acc.cls(1), acc.head(1, 0), acc.cls_head(1, 1)}) {
    EXPECT_EQ(empty.rows, 0);
    for (const auto& [name, field] : SparsityMetrics::fields()) EXPECT_EQ(empty.*field, 0.0) << name;
  }
  testing::expect_error_mentioning([&] { acc.layer(2); }, {"layer 2 is out of range (2 layers)"});
  testing::expect_error_mentioning([&] { acc.cls(-1); }, {"layer -1 is out of range"});
  testing::expect_error_mentioning([&] { acc.head(0, 2); }, {"no layer 0 head 2"});
  testing::expect_error_mentioning([&] { acc.cls_head(2, 0); }, {"no layer 2 head 0"});
  testing::expect_error_mentioning([&] { acc.add(0, Tensor::zeros({1, 2, 2, 3})); }, {"[B, 2, N, N]", "[1, 2, 2, 3]"});
  testing::expect_error_mentioning([] { SparsityAccumulator(0, 2); }, {"at least one layer and head", "0 and 2"});
  testing::expect_error_mentioning([] { SparsityAccumulator(3, 0); }, {"at least one layer and head", "3 and 0"});
}

// ---- against the PyTorch fixture ----

// Straightforward per-row definitions, written independently of train/sparsity.cpp.
SparsityMetrics reference_metrics(const Rows& rows) {
  SparsityMetrics sum;
  for (const auto& row : rows) {
    const int n = static_cast<int>(row.size());
    std::vector<double> up = row;
    std::sort(up.begin(), up.end());  // ascending
    double entropy = 0, total = 0, weighted = 0;
    for (int i = 1; i <= n; ++i) {
      const double p = up[i - 1];
      if (p > 0) entropy -= p * std::log(p);
      total += p;
      weighted += (2.0 * i - n - 1) * p;
    }
    const auto k_for = [&](double mass) {
      double s = 0;
      for (int k = 1; k <= n; ++k) {
        s += up[n - k];
        if (s >= mass - 1e-9) return k;
      }
      return n;
    };
    double top10 = 0;
    for (int k = 1; k <= static_cast<int>(std::ceil(n / 10.0)); ++k) top10 += up[n - k];
    int below = 0;
    for (double p : row) below += p < 0.1 / n;
    sum.rows += 1;
    sum.tokens += n;
    sum.entropy += entropy;
    sum.entropy_norm += entropy / std::log(n);
    sum.k50 += k_for(0.5);
    sum.k90 += k_for(0.9);
    sum.k99 += k_for(0.99);
    sum.top1_mass += up[n - 1];
    sum.topk10_mass += top10;
    sum.gini += weighted / (n * total);
    sum.below_tenth_uniform += static_cast<double>(below) / n;
  }
  for (const auto& [name, field] : SparsityMetrics::fields()) sum.*field /= sum.rows;
  return sum;
}

// Rows of a [B, H, N, N] tensor whose (head, query) pass `keep`.
Rows rows_of(const Tensor& probs, const std::function<bool(int64_t head, int64_t query)>& keep) {
  const std::vector<double> values = probs.to_doubles();
  const int64_t batch = probs.size(0), heads = probs.size(1), n = probs.size(2);
  Rows rows;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t q = 0; q < n; ++q) {
        if (!keep(h, q)) continue;
        const auto begin = values.begin() + ((b * heads + h) * n + q) * n;
        rows.emplace_back(begin, begin + n);
      }
    }
  }
  return rows;
}

// Every layer, head and class-token statistic of `stats` against the reference on the
// fixture's blocks.{i}.attn_probs.
void expect_matches_fixture(const SparsityAccumulator& stats, const SafetensorsFile& io, double tolerance) {
  for (int64_t i = 0; i < stats.layers(); ++i) {
    const Tensor probs = io.get(fmt::format("blocks.{}.attn_probs", i));
    const std::string layer = fmt::format("layer {}", i);
    expect_metrics_near(stats.layer(i), reference_metrics(rows_of(probs, [](int64_t, int64_t) { return true; })),
                        tolerance, layer);
    expect_metrics_near(stats.cls(i), reference_metrics(rows_of(probs, [](int64_t, int64_t q) { return q == 0; })),
                        tolerance, layer + " cls");
    for (int64_t h = 0; h < stats.heads(); ++h) {
      expect_metrics_near(stats.head(i, h),
                          reference_metrics(rows_of(probs, [h](int64_t head, int64_t) { return head == h; })),
                          tolerance, fmt::format("{} head {}", layer, h));
    }
  }
}

TEST(SparsityFixture, AccumulatorMatchesIndependentImplementation) {
  REQUIRE_SHARED("fixtures/timm_vit_tiny_io.safetensors");
  const SafetensorsFile io = SafetensorsFile::open(testing::shared_path("fixtures/timm_vit_tiny_io.safetensors"));
  SparsityAccumulator stats(3, 4);
  for (int64_t i = 0; i < 3; ++i) stats.add(i, io.get(fmt::format("blocks.{}.attn_probs", i)));
  expect_matches_fixture(stats, io, 1e-12);
}

// The fixture model and its analysis of the fixture input, made once for the suite.
class SparsityTool : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(testing::shared_path("fixtures/timm_vit_tiny.safetensors"))) return;
    model_ = load_vit(testing::shared_path("fixtures/timm_vit_tiny.safetensors"));
    io_ = std::make_unique<SafetensorsFile>(
        SafetensorsFile::open(testing::shared_path("fixtures/timm_vit_tiny_io.safetensors")));
    analysis_ = std::make_unique<SparsityAnalysis>(*model_, 4);
    analysis_->add_batch(io_->get("input"), {"first", "second"});
  }
  static void TearDownTestSuite() {
    analysis_.reset();
    io_.reset();
    model_.reset();
  }
  void SetUp() override { REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors"); }

  static std::string read(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  static std::unique_ptr<VisionTransformer> model_;
  static std::unique_ptr<SafetensorsFile> io_;
  static std::unique_ptr<SparsityAnalysis> analysis_;
  data::TempDir dir_;
};
std::unique_ptr<VisionTransformer> SparsityTool::model_;
std::unique_ptr<SafetensorsFile> SparsityTool::io_;
std::unique_ptr<SparsityAnalysis> SparsityTool::analysis_;

// The model's own float32 probabilities match the float64 fixture to ~1e-5, so the
// statistics agree to that order (the integer k's happen to agree exactly).
TEST_F(SparsityTool, AnalysisOfTheModelMatchesFixtureProbabilities) {
  EXPECT_EQ(analysis_->images(), 2);
  expect_matches_fixture(analysis_->stats(), *io_, 1e-5);
  ASSERT_EQ(analysis_->heatmaps().size(), 2u);
  const ClsAttentionMaps& maps = analysis_->heatmaps()[1];
  EXPECT_EQ(maps.name, "second");
  EXPECT_EQ(maps.input.height, 32);
  ASSERT_EQ(maps.layers.size(), 3u);
  // Layer 2, image 1: the head-mean of the class row at patch 5 (token 6).
  const std::vector<double> p = io_->get("blocks.2.attn_probs").to_doubles();
  double expected = 0;
  for (int h = 0; h < 4; ++h) expected += p[((1 * 4 + h) * 65 + 0) * 65 + 6] / 4;
  EXPECT_NEAR(maps.layers[2][5], expected, 1e-6);
}

// The ranking lists the layers from the sparsest (smallest k90) to the densest,
// ties by lower index: the order "sparsest:K" takes its layers from.
TEST_F(SparsityTool, RankingIsSparsestFirst) {
  const std::vector<int64_t> ranking = analysis_->ranking();
  ASSERT_EQ(ranking.size(), 3u);
  std::vector<double> k90;
  for (int64_t layer : ranking) k90.push_back(analysis_->stats().layer(layer).k90);
  EXPECT_LT(k90.front(), k90.back()) << "the fixture's layers need different k90s";
  for (size_t i = 0; i + 1 < ranking.size(); ++i) {
    EXPECT_TRUE(k90[i] < k90[i + 1] || (k90[i] == k90[i + 1] && ranking[i] < ranking[i + 1]))
        << "position " << i << ": layer " << ranking[i] << " (k90 " << k90[i] << ") before layer " << ranking[i + 1]
        << " (k90 " << k90[i + 1] << ")";
  }
}

TEST_F(SparsityTool, KeepMasksReachTheStatisticsAndTheHeatmaps) {
  std::vector<uint8_t> keep(2 * 65, 1);
  keep[5] = keep[65 + 5] = 0;  // token 5 (patch 4) halted in both images
  const Tensor mask = Tensor::from_vector(keep, {2, 65});
  SparsityAnalysis masked(*model_, 1);
  masked.add_batch(io_->get("input"), {}, {mask, mask, mask});
  EXPECT_EQ(masked.stats().layer(0).tokens, 64);
  EXPECT_EQ(masked.stats().layer(0).rows, 2 * 4 * 64);
  EXPECT_EQ(masked.heatmaps()[0].layers[1][4], 0.0f);
  EXPECT_GT(masked.heatmaps()[0].layers[1][5], 0.0f);
  testing::expect_error_mentioning([&] { masked.add_batch(io_->get("input"), {}, {mask}); }, {"1 keep masks", "3 layers"});
}

TEST_F(SparsityTool, WritesTheReportAndNeverHalfOverwrites) {
  const std::string out = dir_.path() + "/report";
  write_sparsity_report(*analysis_, {"fixture", "input", "cpu", 0.5}, out, false);

  const auto json = nlohmann::json::parse(read(out + "/sparsity.json"));
  EXPECT_EQ(json["num_images"], 2);
  EXPECT_EQ(json["tokens"], 65);
  ASSERT_EQ(json["layers"].size(), 3u);
  for (const char* key : {"index", "entropy", "entropy_norm", "k50", "k90", "k99", "top1_mass", "topk10_mass", "gini",
                          "below_tenth_uniform", "heads", "cls"}) {
    EXPECT_TRUE(json["layers"][1].contains(key)) << key;
  }
  EXPECT_EQ(json["layers"][1]["heads"].size(), 4u);
  EXPECT_TRUE(json["layers"][1]["heads"][3].contains("cls"));
  EXPECT_DOUBLE_EQ(json["layers"][1]["k90"].get<double>(), analysis_->stats().layer(1).k90);
  std::vector<int64_t> ranking = json["ranking"];
  EXPECT_EQ(ranking, analysis_->ranking());
  std::sort(ranking.begin(), ranking.end());
  EXPECT_EQ(ranking, (std::vector<int64_t>{0, 1, 2}));

  const std::string csv = read(out + "/sparsity.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 1 + 3 * (1 + 4) * 2);  // header; (layer + heads) x (all, cls)
  EXPECT_EQ(read(out + "/layers.svg").rfind("<svg", 0), 0u);
  const std::string html = read(out + "/index.html");
  for (const char* part : {"layers.svg", "cls_attention_img0.png", "cls_attention_img1.png", "sparsity.csv"}) {
    EXPECT_NE(html.find(part), std::string::npos) << part;
  }
  const data::Image picture = data::decode_image(out + "/cls_attention_img1.png");
  EXPECT_EQ(picture.height, 128);                  // 32 px upscaled 4x
  EXPECT_EQ(picture.width, 4 * 128 + 3 * 4);        // input + 3 layers, 4 px gaps
  EXPECT_FALSE(fs::exists(out + "/cls_attention_img2.png"));

  // An existing OUT is an error and stays as it was; --overwrite replaces it whole.
  data::write_file(out + "/mine.txt", "keep me");
  testing::expect_error_mentioning([&] { write_sparsity_report(*analysis_, {}, out, false); }, {out, "--overwrite"});
  EXPECT_EQ(read(out + "/mine.txt"), "keep me");
  write_sparsity_report(*analysis_, {}, out + "/", true);
  EXPECT_FALSE(fs::exists(out + "/mine.txt"));
  EXPECT_TRUE(fs::exists(out + "/sparsity.json"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_.path()), fs::directory_iterator()), 1);  // nothing left over

  // --overwrite replaces only an earlier report: another folder or a file stays as it was.
  const std::string other = dir_.path() + "/notes", file = dir_.path() + "/notes.txt";
  fs::create_directories(other);
  data::write_file(other + "/mine.txt", "keep me");
  data::write_file(file, "keep me too");
  for (const std::string& path : {other, file}) {
    testing::expect_error_mentioning([&] { write_sparsity_report(*analysis_, {}, path, true); },
                                     {path, "not one", "sparsity.json"});
  }
  EXPECT_EQ(read(other + "/mine.txt"), "keep me");
  EXPECT_EQ(read(file), "keep me too");
}

TEST_F(SparsityTool, TheReportFolderHasTheModeOfAPlainFolder) {
  // Staged in a mkdtemp folder (0700), the report ends as readable as mkdir makes folders: 0777 less the umask.
  const std::string out = dir_.path() + "/report";
  for (const mode_t mask : {mode_t{022}, mode_t{027}}) {
    const mode_t old_mask = ::umask(mask);
    write_sparsity_report(*analysis_, {}, out, /*overwrite=*/true);
    ::umask(old_mask);
    EXPECT_EQ(fs::status(out).permissions(), fs::perms(0777 & ~mask)) << std::oct << mask;
  }
  EXPECT_FALSE(fs::exists(out + "/.mode-probe"));
}

// Random images of one size, for a run through analyze_dataset.
class RandomImages : public data::Dataset {
 public:
  RandomImages(size_t count, int size) : count_(count), size_(size) {}
  size_t size() const override { return count_; }
  int num_classes() const override { return 1; }
  data::Sample get(size_t i) const override {
    Rng rng(i);
    data::Image image(size_, size_, 3);
    for (uint8_t& p : image.pixels) p = static_cast<uint8_t>(rng.integer(256));
    return {image, 0};
  }
  int64_t label(size_t) const override { return 0; }
  std::string name(size_t i) const override { return fmt::format("img{}", i); }

 private:
  size_t count_;
  int size_;
};

TEST_F(SparsityTool, StagesTheReportFolderBeforeTheRunAndKeepsItsLog) {
  const std::string out = dir_.path() + "/report";
  SparsityAnalysis analysis(*model_, 1);
  {
    SparsityReportDir report(out, false);
    EXPECT_FALSE(fs::exists(out));  // staged beside OUT, not in it
    MetricsLog log(report.log_path());
    SparsityRunOptions options;
    options.batch_size = 2;
    options.num_workers = 0;
    options.progress = false;
    options.log = &log;
    analyze_dataset(analysis, RandomImages(5, static_cast<int>(model_->config.preprocess.input_size)), options);
    report.commit(analysis, {"fixture", "random", "cpu", 0.5});
  }
  EXPECT_EQ(analysis.images(), 5);
  EXPECT_EQ(nlohmann::json::parse(read(out + "/sparsity.json"))["num_images"], 5);
  auto logged_images = [&] {
    std::ifstream in(out + "/metrics.jsonl");
    std::vector<int64_t> images;
    for (std::string line; std::getline(in, line);) images.push_back(nlohmann::json::parse(line)["images"]);
    return images;
  };
  EXPECT_EQ(logged_images(), (std::vector<int64_t>{2, 4, 5}));  // one line per batch
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_.path()), fs::directory_iterator()), 1);  // no staging left

  // A run that fails before commit leaves nothing behind, and an earlier OUT as it was.
  {
    SparsityReportDir report(out, true);
    MetricsLog log(report.log_path());
    log.write({{"images", 1}});
  }
  EXPECT_EQ(logged_images(), (std::vector<int64_t>{2, 4, 5}));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_.path()), fs::directory_iterator()), 1);

  // Staging folders that killed runs left beside OUT go once their process is gone; others stay.
  const std::string stale = out + ".tmp-999999999-a1b2c3";
  const std::string live = out + ".tmp-" + std::to_string(getppid()) + "-d4e5f6", other = out + ".tmp-notes";
  for (const std::string& folder : {stale, live, other}) fs::create_directories(folder);
  { SparsityReportDir report(out, true); }
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(other));
  fs::remove_all(live);
  fs::remove_all(other);

  // A place it cannot write fails at once, naming it: here OUT's parent is a file.
  const std::string file = dir_.path() + "/a-file";
  data::write_file(file, "x");
  testing::expect_error_mentioning([&] { SparsityReportDir report(file + "/report", false); }, {file});
}

// sparsity.json holds each layer's, each head's and each class-token row
// set's own statistics (the folder test above checks their keys only).
TEST_F(SparsityTool, ReportHoldsEachHeadsAndTheClassRowsOwnStatistics) {
  const std::string out = dir_.path() + "/report";
  write_sparsity_report(*analysis_, {"fixture", "input", "cpu", 0.5}, out, false);
  const auto json = nlohmann::json::parse(read(out + "/sparsity.json"));
  const SparsityAccumulator& stats = analysis_->stats();
  auto expect_fields = [](const nlohmann::json& j, const SparsityMetrics& m, const std::string& what) {
    EXPECT_EQ(j.at("rows").get<int64_t>(), m.rows) << what;
    for (const auto& [name, field] : SparsityMetrics::fields()) {
      EXPECT_DOUBLE_EQ(j.at(name).get<double>(), m.*field) << what << ": " << name;
    }
  };
  std::set<double> head_entropies;
  ASSERT_EQ(json["layers"].size(), 3u);
  for (int64_t i = 0; i < 3; ++i) {
    const auto& layer = json["layers"][i];
    EXPECT_EQ(layer["index"], i);
    expect_fields(layer, stats.layer(i), fmt::format("layer {}", i));
    expect_fields(layer["cls"], stats.cls(i), fmt::format("layer {} cls", i));
    ASSERT_EQ(layer["heads"].size(), 4u);
    for (int64_t h = 0; h < 4; ++h) {
      EXPECT_EQ(layer["heads"][h]["index"], h);
      expect_fields(layer["heads"][h], stats.head(i, h), fmt::format("layer {} head {}", i, h));
      expect_fields(layer["heads"][h]["cls"], stats.cls_head(i, h), fmt::format("layer {} head {} cls", i, h));
      head_entropies.insert(stats.head(i, h).entropy);
    }
    // The class rows differ from the layer's (else the check above could not tell them apart).
    EXPECT_NE(stats.cls(i).entropy, stats.layer(i).entropy);
  }
  EXPECT_EQ(head_entropies.size(), 12u) << "the fixture's heads need different statistics";
}

// sparsity.csv's rows hold what they are labelled with: layer, head, the
// row set, then the statistics of that head (or of all heads), in the
// header's order.
TEST_F(SparsityTool, CsvRowsHoldTheirOwnLayerAndHeadsStatistics) {
  const std::vector<std::string> lines = [] {
    std::vector<std::string> out;
    std::stringstream csv(sparsity_csv(*analysis_));
    for (std::string line; std::getline(csv, line);) out.push_back(line);
    return out;
  }();
  const auto cells = [](const std::string& line) {
    std::vector<std::string> out;
    std::stringstream row(line);
    for (std::string cell; std::getline(row, cell, ',');) out.push_back(cell);
    return out;
  };
  const std::vector<std::string> header = cells(lines.at(0));
  ASSERT_EQ(header.size(), 4 + SparsityMetrics::fields().size());
  const SparsityAccumulator& stats = analysis_->stats();
  const auto expect_row = [&](const std::string& layer, const std::string& head, const std::string& rows_of,
                              const SparsityMetrics& m) {
    const std::string label = layer + "," + head + "," + rows_of + ",";
    const auto line = std::find_if(lines.begin(), lines.end(), [&](const std::string& l) { return l.rfind(label, 0) == 0; });
    ASSERT_NE(line, lines.end()) << label;
    const std::vector<std::string> row = cells(*line);
    ASSERT_EQ(row.size(), header.size()) << label;
    EXPECT_EQ(std::stoll(row[3]), m.rows) << label;
    for (size_t f = 0; f < SparsityMetrics::fields().size(); ++f) {
      const auto& [name, field] = SparsityMetrics::fields()[f];
      EXPECT_EQ(header[4 + f], name);
      EXPECT_DOUBLE_EQ(std::stod(row[4 + f]), m.*field) << label << name;
    }
  };
  expect_row("2", "all", "all", stats.layer(2));
  expect_row("2", "all", "cls", stats.cls(2));
  expect_row("1", "3", "all", stats.head(1, 3));
  expect_row("0", "2", "cls", stats.cls_head(0, 2));
}

// num_images takes that many images, cutting the last batch short; the
// heatmaps stop at their count within a batch, and images without names are
// numbered across batches.
TEST_F(SparsityTool, NumImagesAndHeatmapCountsAreKept) {
  SparsityAnalysis analysis(*model_, 1);
  SparsityRunOptions options;
  options.num_images = 3;
  options.batch_size = 2;
  options.num_workers = 0;
  options.progress = false;
  analyze_dataset(analysis, RandomImages(5, static_cast<int>(model_->config.preprocess.input_size)), options);
  EXPECT_EQ(analysis.images(), 3);
  EXPECT_EQ(analysis.stats().layer(0).rows, 3 * 4 * 65);
  EXPECT_EQ(analysis.heatmaps().size(), 1u);

  SparsityAnalysis unnamed(*model_, 3);
  unnamed.add_batch(io_->get("input"));
  unnamed.add_batch(io_->get("input"));
  ASSERT_EQ(unnamed.heatmaps().size(), 3u);
  EXPECT_EQ(unnamed.heatmaps()[2].name, "image 2");
}

// --overwrite may also replace an empty folder (made beforehand for the report).
TEST_F(SparsityTool, OverwriteReplacesAnEmptyFolder) {
  const std::string out = dir_.path() + "/report";
  fs::create_directories(out);
  write_sparsity_report(*analysis_, {}, out, true);
  EXPECT_TRUE(fs::exists(out + "/sparsity.json"));
}

// Layers that tie on k90 keep their order in the ranking, also past the 16
// elements below which std::sort happens to keep it: a 20-layer ViT whose
// queries and keys are all 0 attends uniformly in every layer.
TEST(SparsityRanking, TiedLayersKeepTheirOrder) {
  VitConfig config;
  config.img_size = 4;
  config.patch_size = 2;
  config.embed_dim = 8;
  config.depth = 20;
  config.num_heads = 2;
  config.mlp_hidden = 8;
  config.num_classes = 2;
  VisionTransformer model(config, 3);
  for (auto& [name, p] : model.named_parameters()) {
    if (name.find(".attn.qkv.") != std::string::npos) std::fill(p.data<float>(), p.data<float>() + p.numel(), 0.0f);
  }
  SparsityAnalysis analysis(model, 0);
  Rng rng(2);
  analysis.add_batch(Tensor::randn({1, 3, 4, 4}, rng));
  EXPECT_EQ(analysis.stats().layer(0).k90, 5);  // ceil(0.9 * 5 tokens)
  EXPECT_EQ(analysis.stats().layer(19).k90, 5);
  std::vector<int64_t> identity(20);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(analysis.ranking(), identity);
}

}  // namespace
}  // namespace engine

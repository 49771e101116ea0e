// The distillation objective, and ./train_distill's pipeline end to end on a
// tiny teacher (the timm fixture) and a small folder of real images.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "data/archive.h"
#include "data/image.h"
#include "engine/ops/ops.h"
#include "models/vit_checkpoint.h"
#include "tests/gradcheck.h"
#include "tests/shared_data.h"
#include "train/distill.h"

namespace engine {
namespace {

namespace fs = std::filesystem;

TEST(Distill, LossIsVarianceNormalisedMse) {
  Tensor target = Tensor::from_vector<double>({1, 3, 5, 7}, {1, 2, 2});  // variance 5
  Tensor prediction = Tensor::from_vector<double>({2, 3, 5, 5}, {1, 2, 2});
  // MSE = (1 + 0 + 0 + 4) / 4 = 1.25; / 5 = 0.25.
  EXPECT_NEAR(distill_loss(prediction, target, 0.0).item<double>(), 0.25, 1e-12);
  // Identical tensors: zero MSE and cosine 1, so zero with the cosine term too.
  EXPECT_NEAR(distill_loss(target, target, 0.5).item<double>(), 0.0, 1e-9);
  Rng rng(3);
  Tensor t = Tensor::randn({2, 3, 4}, rng, DType::F64);
  Tensor p = testing::random_leaf({2, 3, 4}, rng);
  testing::expect_gradients_match([&](const auto& in) { return distill_loss(in[0], t, 0.3); }, {p});
}

// A small ImageFolder with train/ and test/ splits made of the real ImageNet sample JPEGs.
std::string make_image_folder(const std::string& root) {
  const std::string source = data::extract_archive_once(testing::shared_path("data/imagenet-sample.tar"),
                                                        (fs::temp_directory_path() / "engine_distill_cache").string());
  fs::remove_all(root);
  int index = 0;
  for (const auto& entry : fs::recursive_directory_iterator(source + "/imagenet-sample/val")) {
    if (!entry.is_regular_file()) continue;
    const std::string split = index % 5 == 0 ? "test" : "train";
    const std::string cls = index % 2 == 0 ? "even" : "odd";
    fs::create_directories(fs::path(root) / split / cls);
    fs::copy_file(entry.path(), fs::path(root) / split / cls / entry.path().filename());
    ++index;
  }
  return root;
}

DistillSettings tiny_settings(const std::string& images, const std::string& out) {
  DistillSettings s;
  s.teacher = testing::shared_path("fixtures/timm_vit_tiny.safetensors");
  s.data = images;
  s.train_subdir = "train";
  s.test_subdir = "test";
  s.batch_size = 8;
  s.workers = 1;
  s.sparsity_images = 16;
  s.mixer = "gated_rnn:width=16";
  s.budget_images = 160;
  s.lr = 3e-3;
  s.latency_repeats = 1;
  s.latency_batches = {1};
  s.out_dir = out;
  s.overwrite = true;
  return s;
}

std::vector<double> distill_losses(const std::string& metrics_path) {
  std::vector<double> losses;
  std::ifstream in(metrics_path);
  for (std::string line; std::getline(in, line);) {
    nlohmann::json record = nlohmann::json::parse(line);
    if (record["phase"] == "distill") losses.push_back(record["loss"]);
  }
  return losses;
}

TEST(Distill, EndToEndReducesTheLossAndWritesAHybrid) {
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  REQUIRE_SHARED("data/imagenet-sample.tar");
  const std::string images = make_image_folder((fs::temp_directory_path() / "engine_distill_images").string());
  const std::string out = (fs::temp_directory_path() / "engine_distill_out").string();
  DistillSettings s = tiny_settings(images, out);
  s.layers = "sparsest:2";
  s.finetune_images = 16;
  nlohmann::json results = run_distill(s);

  std::vector<double> losses = distill_losses(out + "/metrics.jsonl");
  ASSERT_GE(losses.size(), 2u);
  EXPECT_LT(losses.back(), 0.7 * losses.front()) << "distillation did not reduce the loss";
  EXPECT_EQ(results["replaced_layers"].size(), 2u);
  EXPECT_LT(results["student"]["params"].get<int64_t>(), results["teacher"]["params"].get<int64_t>());
  EXPECT_TRUE(results["student"].contains("latency_ms_b1"));
  // The saved hybrid loads back with its mixers.
  auto hybrid = load_vit(out + "/hybrid");
  int replaced = 0;
  for (const std::string& mixer : hybrid->config.mixers) replaced += mixer != "attention";
  EXPECT_EQ(replaced, 2);
}

TEST(Distill, GroupwiseReportsEveryGroupAndRho) {
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  REQUIRE_SHARED("data/imagenet-sample.tar");
  const std::string images = make_image_folder((fs::temp_directory_path() / "engine_distill_images2").string());
  const std::string out = (fs::temp_directory_path() / "engine_distill_groups").string();
  DistillSettings s = tiny_settings(images, out);
  s.experiment = "groupwise";
  s.groups = "each";
  s.budget_images = 32;
  nlohmann::json results = run_distill(s);
  ASSERT_EQ(results["groups"].size(), 3u);
  for (const auto& g : results["groups"]) {
    EXPECT_TRUE(g.contains("k90"));
    EXPECT_TRUE(g.contains("drop"));
  }
  EXPECT_TRUE(fs::exists(out + "/drop_vs_k90.svg"));
  EXPECT_TRUE(results.contains("spearman_rho"));
}

}  // namespace
}  // namespace engine

// Evaluation end to end on real ImageNet images: decode, resize, crop,
// normalise, synset label mapping, top-k bookkeeping, predictions.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "data/archive.h"
#include "data/files.h"
#include "data/image_folder.h"
#include "data/transforms.h"
#include "engine/bench_timing.h"
#include "models/vit_checkpoint.h"
#include "tests/expect_error.h"
#include "tests/shared_data.h"
#include "train/evaluate.h"

namespace engine {
namespace {

TEST(Eval, ImagenetSampleWithSynsets) {
  REQUIRE_SHARED("data/imagenet-sample.tar");
  const std::string cache = testing::scratch_path("engine_eval_cache");
  const std::string root = data::extract_archive_once(testing::shared_path("data/imagenet-sample.tar"), cache);
  data::ImageFolder dataset(root + "/imagenet-sample/val", root + "/imagenet-sample/synsets.txt");
  ASSERT_EQ(dataset.size(), 50u);
  ASSERT_EQ(dataset.num_classes(), 1000);

  // A small random 224-px ViT with 1000 classes, written and read back as a user would.
  VitConfig config = vit_preset("vit_tiny_patch16_224");
  config.depth = 1;
  config.embed_dim = 48;
  config.mlp_hidden = 96;
  const std::string dir = testing::scratch_path("engine_eval_model");
  {
    VisionTransformer model(config, 1);
    save_vit(model, dir);
  }
  auto model = load_vit(dir);
  EvalOptions options;
  options.batch_size = 16;
  options.progress = false;
  EvalResult result = evaluate_classifier([&](const Tensor& x) { return model->forward(x); }, dataset,
                                          model->config.preprocess, options);
  EXPECT_EQ(result.images, 50);
  ASSERT_EQ(result.predictions.size(), 50u);
  // Predictions are sorted by relative path and top-1 agrees with them and the synset labels.
  std::map<std::string, int64_t> label_of;
  for (size_t i = 0; i < dataset.size(); ++i) label_of[dataset.name(i)] = dataset.label(i);
  int64_t correct = 0;
  for (size_t i = 0; i < result.predictions.size(); ++i) {
    const auto& [name, predicted] = result.predictions[i];
    if (i > 0) {
      EXPECT_LT(result.predictions[i - 1].first, name);
    }
    EXPECT_GE(predicted, 0);
    EXPECT_LT(predicted, 1000);
    correct += predicted == label_of.at(name);
  }
  EXPECT_DOUBLE_EQ(result.top1, correct / 50.0);
  EXPECT_GE(result.top5, result.top1);
  std::filesystem::remove_all(dir);
}

// A class-sorted dataset, as an ImageFolder lists its items: `per_class` items
// of class 0, then of class 1, ...; item i is a 2x2 image filled with its label.
class SortedByClass : public data::Dataset {
 public:
  SortedByClass(int classes, int per_class) : classes_(classes), per_class_(per_class) {}
  size_t size() const override { return static_cast<size_t>(classes_ * per_class_); }
  int num_classes() const override { return classes_; }
  data::Sample get(size_t i) const override {
    data::Image image(2, 2, 3);
    std::fill(image.pixels.begin(), image.pixels.end(), static_cast<uint8_t>(label(i)));
    return {image, label(i)};
  }
  int64_t label(size_t i) const override { return static_cast<int64_t>(i) / per_class_; }
  std::string name(size_t i) const override { return fmt::format("{}/{:02}", label(i), i); }

 private:
  int classes_, per_class_;
};

// Raw pixels in, so a logits function can read each image's label back.
Preprocess raw_pixels() {
  Preprocess p;
  p.input_size = 2;
  p.crop_pct = 1.0;
  p.interpolation = "bilinear";
  for (int c = 0; c < 3; ++c) p.mean[c] = 0.0, p.std[c] = 1.0 / 255.0;
  return p;
}

// Logits [B, classes] from fill(label of image b, row b).
LogitsFn logits_from_labels(int64_t classes, const std::function<void(int64_t, float*)>& fill) {
  return [classes, fill](const Tensor& images) {
    const Tensor pixels = images.contiguous();
    const int64_t batch = pixels.size(0), per_image = pixels.numel() / batch;
    std::vector<float> logits(static_cast<size_t>(batch * classes), 0.0f);
    for (int64_t b = 0; b < batch; ++b) {
      fill(std::lround(pixels.data<float>()[b * per_image]), logits.data() + b * classes);
    }
    return Tensor::from_vector(logits, {batch, classes});
  };
}

EvalOptions quiet(int64_t limit) {
  EvalOptions options;
  options.batch_size = 4;
  options.limit = limit;
  options.num_workers = 0;
  options.progress = false;
  return options;
}

TEST(Eval, LimitSpreadsOverEveryClassOfASortedDataset) {
  const SortedByClass dataset(4, 5);
  const LogitsFn perfect = logits_from_labels(4, [](int64_t label, float* row) { row[label] = 1.0f; });
  const EvalResult result = evaluate_classifier(perfect, dataset, raw_pixels(), quiet(8));
  ASSERT_EQ(result.images, 8);
  std::set<int64_t> classes;
  for (const auto& [name, predicted] : result.predictions) classes.insert(predicted);
  EXPECT_EQ(classes, (std::set<int64_t>{0, 1, 2, 3})) << "a limit must not take the first class only";
  EXPECT_DOUBLE_EQ(result.top1, 1.0);
}

TEST(Eval, NanLogitsScoreNothingAndTiesGoToTheFirstClass) {
  const SortedByClass dataset(4, 3);
  const LogitsFn nan = logits_from_labels(8, [](int64_t, float* row) { std::fill(row, row + 8, NAN); });
  EvalResult result = evaluate_classifier(nan, dataset, raw_pixels(), quiet(0));
  EXPECT_EQ(result.top1, 0.0);
  EXPECT_EQ(result.top5, 0.0);
  // All logits equal: the prediction is class 0 (the first maximum), and top-k agrees with it.
  const LogitsFn tied = logits_from_labels(8, [](int64_t, float* row) { std::fill(row, row + 8, 0.5f); });
  result = evaluate_classifier(tied, dataset, raw_pixels(), quiet(0));
  EXPECT_DOUBLE_EQ(result.top1, 0.25);  // the 3 images of class 0 of 12
  EXPECT_DOUBLE_EQ(result.top5, 1.0);   // classes 0-3 rank 0-3
  for (const auto& [name, predicted] : result.predictions) EXPECT_EQ(predicted, 0) << name;
  // One other class's logit NaN: the row counts as diverged, and the
  // prediction is that class (the first NaN, as argmax) rather than the
  // maximum of the others (top-1 and top-5 used to count the true class).
  const LogitsFn one_nan = logits_from_labels(8, [](int64_t label, float* row) {
    row[label] = 1.0f;
    row[(label + 3) % 8] = NAN;
  });
  result = evaluate_classifier(one_nan, dataset, raw_pixels(), quiet(0));
  EXPECT_EQ(result.top1, 0.0);
  EXPECT_EQ(result.top5, 0.0);
  std::set<int64_t> predicted_classes;
  for (const auto& [name, predicted] : result.predictions) predicted_classes.insert(predicted);
  EXPECT_EQ(predicted_classes, (std::set<int64_t>{3, 4, 5, 6}));
  // The true logit tied with a later class only: still top-1.
  const LogitsFn tied_later = logits_from_labels(8, [](int64_t label, float* row) { row[label] = row[7] = 1.0f; });
  EXPECT_DOUBLE_EQ(evaluate_classifier(tied_later, dataset, raw_pixels(), quiet(0)).top1, 1.0);
}

TEST(Eval, LatenciesTimeTheModelsInTurnsAfterAWarmUpRound) {
  std::string calls;
  // Sleeps give lower bounds only: a median can be no shorter than its model's sleep.
  auto model = [&calls](char name, int sleep_ms) -> LogitsFn {
    return [&calls, name, sleep_ms](const Tensor& images) {
      calls += name;
      std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
      return images;
    };
  };
  const Tensor images = Tensor::from_vector(std::vector<float>{1.0f, 2.0f}, {1, 2});
  const std::vector<double> ms = latencies_ms({model('a', 2), model('b', 6)}, images, 3);
  EXPECT_EQ(calls, "abababab") << "one untimed round, then 3 timed rounds, the models taking turns";
  ASSERT_EQ(ms.size(), 2u);
  EXPECT_GE(ms[0], 2.0);
  EXPECT_GE(ms[1], 6.0);
}

TEST(Eval, TimingImagesAreSpreadOverAClassSortedDataset) {
  const SortedByClass dataset(4, 5);  // each image filled with its class
  auto classes_in = [&](int64_t count) {
    const Tensor images = timing_images(dataset, raw_pixels(), count, Device::cpu()).contiguous();
    std::vector<int64_t> classes;
    for (int64_t b = 0; b < count; ++b) classes.push_back(std::lround(images.data<float>()[b * 12]));
    return classes;
  };
  EXPECT_EQ(classes_in(4), (std::vector<int64_t>{0, 1, 2, 3})) << "the first 4 would all be class 0";
  EXPECT_EQ(classes_in(2), (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(classes_in(22).size(), 22u) << "more than the dataset holds: repeated from the start";
}

// A one-block ViT of 4 x 4 images in 2 x 2 patches (width 8, 2 heads, MLP 16,
// 3 classes) that reads raw pixels.
VitConfig tiny_vit_config() {
  VitConfig config;
  config.img_size = 4;
  config.patch_size = 2;
  config.embed_dim = 8;
  config.depth = 1;
  config.num_heads = 2;
  config.mlp_hidden = 16;
  config.num_classes = 3;
  config.preprocess = raw_pixels();
  config.preprocess.input_size = 4;
  return config;
}

TEST(Eval, TimeModelsGivesEveryModelATimeAtEveryBatchSize) {
  const VitConfig config = tiny_vit_config();
  VisionTransformer teacher(config, 1), student(config, 2);
  const SortedByClass dataset(1, 2);  // 2 images: batch 3 repeats the first
  const LatencyTable table = time_models({&teacher, &student}, dataset, {1, 3}, 2, Device::cpu());
  EXPECT_EQ(table.batches, (std::vector<int64_t>{1, 3}));
  ASSERT_EQ(table.eager_ms.size(), 2u);
  for (const std::vector<double>& row : table.eager_ms) {
    ASSERT_EQ(row.size(), 2u);
    for (double ms : row) EXPECT_GT(ms, 0.0);
  }
  EXPECT_TRUE(table.graph_ms.empty()) << "graph replays are for GPUs";
  const nlohmann::json student_ms = table.by_batch(table.eager_ms[1]);
  EXPECT_EQ(student_ms.size(), 2u);
  EXPECT_DOUBLE_EQ(student_ms.at("b3").get<double>(), table.eager_ms[1][1]);
  EXPECT_THROW(table.by_batch({1.0}), Error);
}

// A dataset that is only its class names (what check_labels_fit reads).
class NamedClasses : public data::LabeledDataset {
 public:
  explicit NamedClasses(std::vector<std::string> names) : names_(std::move(names)) {}
  size_t size() const override { return 0; }
  int num_classes() const override { return static_cast<int>(names_.size()); }
  data::Sample get(size_t) const override { return {}; }
  int64_t label(size_t) const override { return 0; }
  std::string name(size_t) const override { return ""; }
  const std::vector<std::string>& classes() const override { return names_; }
  const std::string& root() const override { return root_; }

 private:
  std::vector<std::string> names_;
  std::string root_ = "folder";
};

TEST(Eval, ClassNamesMustKeepTheModelsLabels) {
  VitConfig model;
  model.num_classes = 3;
  model.label_names = {"airplane", "automobile", "bird"};
  ::testing::internal::CaptureStderr();
  check_labels_fit(model, NamedClasses({"airplane", "automobile"}));
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "") << "every class is checked by name";
  // Names the model does not list, fewer than its head: ImageNet synset folders without the synset list.
  ::testing::internal::CaptureStderr();
  check_labels_fit(model, NamedClasses({"n01440764", "n01443537"}));
  EXPECT_THAT(::testing::internal::GetCapturedStderr(),
              ::testing::AllOf(::testing::HasSubstr("warning: folder has 2 classes but the model's head has 3"),
                               ::testing::HasSubstr("--synsets")));
  // The first class folder missing: every label would be off by one.
  testing::expect_error_mentioning([&] { check_labels_fit(model, NamedClasses({"automobile", "bird"})); },
                                   {"folder", "'automobile' is label 0 here but label 1"});
  testing::expect_error_mentioning(
      [&] { check_labels_fit(model, NamedClasses({"airplane", "automobile", "bird", "cat"})); },
      {"4 classes", "head has 3"});
}

// A line the disk does not take is an error naming the log, not a log that
// silently ends (/dev/full refuses every write with ENOSPC).
TEST(Eval, MetricsLogWriteFailureIsAnError) {
  if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  MetricsLog log("/dev/full");
  testing::expect_error_mentioning([&] { log.write({{"phase", "train"}, {"step", 0}}); },
                                   {"cannot write metrics log '/dev/full'", "No space left"});
}

// A run that fails before its first record leaves no log (an empty one would
// stand in the way of the next run), while a path it could never write is an
// error from the start.
TEST(Eval, MetricsLogFileAppearsWithItsFirstRecord) {
  namespace fs = std::filesystem;
  data::TempDir dir;
  const std::string path = dir.path() + "/metrics.jsonl";
  { MetricsLog unused(path); }
  EXPECT_FALSE(fs::exists(path));
  Rng rng(11);
  const int64_t step = 1 + rng.integer(1000);
  {
    MetricsLog log(path);
    log.write({{"step", step}});
    EXPECT_TRUE(fs::exists(path));
  }
  std::ifstream in(path);
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_EQ(nlohmann::json::parse(line)["step"], step);
  EXPECT_FALSE(std::getline(in, line));
  // An earlier log there is emptied at once, not left to pass for this run's.
  { MetricsLog unused(path); }
  EXPECT_EQ(fs::file_size(path), 0u);
  const std::string nowhere = dir.path() + "/missing/metrics.jsonl";
  testing::expect_error_mentioning([&] { MetricsLog log(nowhere); },
                                   {"cannot write metrics log '" + nowhere + "'", "No such file"});
  testing::expect_error_mentioning([&] { MetricsLog log(dir.path()); }, {dir.path(), "is a folder"});
}

TEST(Eval, LogsOneLinePerBatchWithTheRunningAccuracy) {
  const SortedByClass dataset(4, 3);  // 12 images, batches of 4
  // Right on the first 6 images only (classes 0 and 1): the running top-1 falls after them.
  const LogitsFn half = logits_from_labels(4, [](int64_t label, float* row) { row[label < 2 ? label : 0] = 1.0f; });
  data::TempDir dir;
  const std::string path = dir.path() + "/eval.jsonl";
  EvalOptions options = quiet(0);
  {
    MetricsLog log(path);
    options.log = &log;
    evaluate_classifier(half, dataset, raw_pixels(), options);
  }
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 3u);
  const double expected_top1[] = {1.0, 6.0 / 8, 6.0 / 12};
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i]["images"], 4 * static_cast<int64_t>(i + 1));
    EXPECT_DOUBLE_EQ(lines[i]["top1"].get<double>(), expected_top1[i]);
    EXPECT_DOUBLE_EQ(lines[i]["top5"].get<double>(), 1.0);  // 4 classes
    EXPECT_GT(lines[i]["images_per_second"].get<double>(), 0.0);
  }
}

// An RGB image of random pixels, and the mean and std of Preprocess's
// defaults (ImageNet's), which the transforms under test normalise with.
data::Image random_image(int width, int height, uint64_t seed) {
  Rng pixels(seed);
  data::Image image(width, height, 3);
  for (uint8_t& v : image.pixels) v = static_cast<uint8_t>(pixels.integer(256));
  return image;
}
const float kMean[3] = {0.485f, 0.456f, 0.406f}, kStd[3] = {0.229f, 0.224f, 0.225f};

// RandomCrop(reflect) then flip then normalise, drawing from the sample's RNG in that order.
TEST(Eval, CropFlipTransformComposesCropFlipAndNormalise) {
  Preprocess p;
  p.input_size = 8;
  p.crop_pct = 1.0;
  const data::Image image = random_image(8, 8, 4);
  const data::Transform transform = crop_flip_transform(p, 2);
  std::vector<float> got(3 * 8 * 8), expected(3 * 8 * 8), plain(3 * 8 * 8);
  data::to_normalized_chw(image, kMean, kStd, plain.data());
  int changed = 0;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    std::mt19937_64 rng(seed), reference_rng(seed);
    transform(image, got.data(), rng);
    data::Image view = data::random_crop_reflect_pad(image, 8, 2, reference_rng);
    if (reference_rng() & 1) view = data::hflip(view);
    data::to_normalized_chw(view, kMean, kStd, expected.data());
    EXPECT_EQ(got, expected) << "seed " << seed;
    changed += got != plain;
  }
  EXPECT_GE(changed, 4) << "the augmentation rarely changes the image";
  EXPECT_THROW(crop_flip_transform(p, 8), Error);
}

// Without padding there is no crop (nothing drawn for it): the eval view,
// flipped by the sample's first draw.
TEST(Eval, CropFlipTransformWithoutPaddingOnlyFlips) {
  Preprocess p;
  p.input_size = 8;
  p.crop_pct = 1.0;
  const data::Image image = random_image(8, 8, 6);
  const data::Transform transform = crop_flip_transform(p, 0);
  std::vector<float> got(3 * 8 * 8), expected(3 * 8 * 8);
  int flips = 0;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    std::mt19937_64 rng(seed), reference_rng(seed);
    transform(image, got.data(), rng);
    const bool flip = reference_rng() & 1;
    data::to_normalized_chw(flip ? data::hflip(image) : image, kMean, kStd, expected.data());
    EXPECT_EQ(got, expected) << "seed " << seed;
    flips += flip;
  }
  EXPECT_GT(flips, 0);
  EXPECT_LT(flips, 8);
}

// Top-5 counts the ranks 0-4: a true logit below exactly 4 others is in the
// top 5, below 5 others it is not (and neither is top-1).
TEST(Eval, TopFiveHoldsTheTrueClassBelowFourOthersButNotBelowFive) {
  const SortedByClass dataset(4, 3);
  for (int above : {4, 5}) {
    SCOPED_TRACE(fmt::format("{} larger logits", above));
    const LogitsFn ranked = logits_from_labels(10, [above](int64_t label, float* row) {
      row[label] = 0.5f;
      for (int c = 9, placed = 0; placed < above; --c) {
        if (c == label) continue;
        row[c] = 1.0f + static_cast<float>(c);
        ++placed;
      }
    });
    const EvalResult result = evaluate_classifier(ranked, dataset, raw_pixels(), quiet(0));
    EXPECT_DOUBLE_EQ(result.top1, 0.0);
    EXPECT_DOUBLE_EQ(result.top5, above < 5 ? 1.0 : 0.0);
  }
}

// The latencies reported (latencies_ms, and the benchmarks' median_time_ms)
// are medians of the timed rounds: the middle value, or the mean of the
// middle pair, never the mean of all nor one end of the pair.
TEST(Eval, LatencyMedianIsTheMiddleValueOrTheMeanOfTheMiddlePair) {
  EXPECT_EQ(median({40, 1, 120, 1}), 20.5);  // mean 40.5, upper middle 40
  EXPECT_EQ(median({1, 50, 2}), 2.0);        // mean 17.7
  EXPECT_EQ(median({3.5}), 3.5);
  EXPECT_THROW(median({}), Error);
}

// median_time_ms: `warmup` untimed calls, then `rounds` rounds of `calls` calls.
TEST(Eval, MedianTimeRunsTheWarmupAndEveryRound) {
  int runs = 0;
  EXPECT_GE(median_time_ms(Device::cpu(), [&] { ++runs; }, 4, 3, 2), 0.0);
  EXPECT_EQ(runs, 2 + 3 * 4);
}

// The GEMM GFLOPs per image of a plain ViT, worked out from its shapes (4 x 4
// images of 2 x 2 patches: 4 patches and a class token, width 8, MLP 16, 3
// classes): the patch embedding 2 * 4 * 12 * 8 = 768; the block's qkv
// 2 * 5 * 8 * 24 = 1920, proj 640, fc1 and fc2 1280 each, q k^T and p v
// 2 * 2 * 5 * 5 * 8 = 800; the head on the class token 2 * 8 * 3 = 48:
// 6736 in all, whatever the batch (here 4 then 2 images).
TEST(Eval, GflopsAreTheGemmFlopsPerImage) {
  const VitConfig config = tiny_vit_config();
  VisionTransformer model(config, 1);
  const SortedByClass dataset(3, 2);
  const EvalResult result = evaluate_classifier(inference_logits(model), dataset, config.preprocess, quiet(0));
  ASSERT_EQ(result.images, 6);
  EXPECT_NEAR(result.gflops, 6736e-9, 1e-15);
}

// A label past the model's head is an error naming the image, not a read
// past the logits row.
TEST(Eval, ALabelOutsideTheHeadIsAnErrorNamingTheImage) {
  const SortedByClass dataset(5, 1);  // labels 0..4
  const LogitsFn four = logits_from_labels(4, [](int64_t label, float* row) { row[label % 4] = 1.0f; });
  testing::expect_error_mentioning([&] { evaluate_classifier(four, dataset, raw_pixels(), quiet(0)); },
                                   {"4/04", "label 4 is outside the model's 4 classes"});
}

// limit = 1 is one image; a dataset with none is an error, not a NaN accuracy.
TEST(Eval, ALimitOfOneIsOneImageAndNoImagesIsAnError) {
  const LogitsFn perfect = logits_from_labels(4, [](int64_t label, float* row) { row[label] = 1.0f; });
  EXPECT_EQ(evaluate_classifier(perfect, SortedByClass(4, 5), raw_pixels(), quiet(1)).images, 1);
  testing::expect_error_mentioning([&] { evaluate_classifier(perfect, SortedByClass(0, 1), raw_pixels(), quiet(0)); },
                                   {"saw no images"});
}

// The untimed round stays out of the median: a model that is quick only on
// its first call has the slow calls' time (a lower bound, as sleeps give).
TEST(Eval, LatencyLeavesTheWarmUpCallOut) {
  int calls = 0;
  const LogitsFn slow_after_first = [&calls](const Tensor& images) {
    if (calls++ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return images;
  };
  const Tensor images = Tensor::from_vector(std::vector<float>{1.0f}, {1, 1});
  EXPECT_GE(latencies_ms({slow_after_first}, images, 1).at(0), 20.0);
  EXPECT_EQ(calls, 2);
  testing::expect_error_mentioning([&] { latencies_ms({slow_after_first}, images, 0); }, {"0 repeats"});
}

// The eval transform: resize with the model's interpolation and center crop,
// normalise; with random_flip, a flip drawn from the sample's RNG.
TEST(Eval, EvalTransformResizesWithTheModelsInterpolationAndFlipsOnlyWhenAsked) {
  Preprocess p;
  p.input_size = 6;
  p.crop_pct = 0.75;  // resize to 8, crop 6
  const data::Image image = random_image(12, 10, 5);
  std::vector<float> got(3 * 6 * 6), expected(3 * 6 * 6);
  std::set<std::vector<float>> views;
  for (const char* interpolation : {"bilinear", "bicubic"}) {
    p.interpolation = interpolation;
    const data::Interp interp = p.interpolation == "bilinear" ? data::Interp::Bilinear : data::Interp::Bicubic;
    const data::Image view = data::resize_and_center_crop(image, 6, 0.75, interp);
    int flips = 0;
    for (uint64_t seed = 0; seed < 8; ++seed) {
      std::mt19937_64 plain_rng(seed), rng(seed), reference_rng(seed);
      eval_transform(p)(image, got.data(), plain_rng);
      data::to_normalized_chw(view, kMean, kStd, expected.data());
      EXPECT_EQ(got, expected) << interpolation << " seed " << seed;
      views.insert(got);
      eval_transform(p, /*random_flip=*/true)(image, got.data(), rng);
      const bool flip = reference_rng() & 1;
      data::to_normalized_chw(flip ? data::hflip(view) : view, kMean, kStd, expected.data());
      EXPECT_EQ(got, expected) << interpolation << " flipped, seed " << seed;
      flips += flip;
    }
    EXPECT_GT(flips, 0);
    EXPECT_LT(flips, 8);
  }
  EXPECT_EQ(views.size(), 2u) << "bilinear and bicubic should differ on this image";
  p.interpolation = "nearest";
  testing::expect_error_mentioning([&] { eval_transform(p); }, {"'nearest'"});
}

}  // namespace
}  // namespace engine

// Evaluation end to end on real ImageNet images: decode, resize, crop,
// normalise, synset label mapping, top-k bookkeeping, predictions.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "data/archive.h"
#include "data/image_folder.h"
#include "data/transforms.h"
#include "models/vit_checkpoint.h"
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

// RandomCrop(reflect) then flip then normalise, drawing from the sample's RNG in that order.
TEST(Eval, CropFlipTransformComposesCropFlipAndNormalise) {
  Preprocess p;
  p.input_size = 8;
  p.crop_pct = 1.0;
  Rng pixels(4);
  data::Image image(8, 8, 3);
  for (uint8_t& v : image.pixels) v = static_cast<uint8_t>(pixels.integer(256));
  const float mean[3] = {0.485f, 0.456f, 0.406f}, stddev[3] = {0.229f, 0.224f, 0.225f};
  const data::Transform transform = crop_flip_transform(p, 2);
  std::vector<float> got(3 * 8 * 8), expected(3 * 8 * 8), plain(3 * 8 * 8);
  data::to_normalized_chw(image, mean, stddev, plain.data());
  int changed = 0;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    std::mt19937_64 rng(seed), reference_rng(seed);
    transform(image, got.data(), rng);
    data::Image view = data::random_crop_reflect_pad(image, 8, 2, reference_rng);
    if (reference_rng() & 1) view = data::hflip(view);
    data::to_normalized_chw(view, mean, stddev, expected.data());
    EXPECT_EQ(got, expected) << "seed " << seed;
    changed += got != plain;
  }
  EXPECT_GE(changed, 4) << "the augmentation rarely changes the image";
  EXPECT_THROW(crop_flip_transform(p, 8), Error);
}

}  // namespace
}  // namespace engine

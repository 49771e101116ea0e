// The MLP demo: its range-checked settings, and end-to-end that the core (tensors, autograd, ops,
// AdamW) learns a real dataset.
#include <gtest/gtest.h>

#include <filesystem>

#include "data/dataset.h"
#include "data/idx.h"
#include "engine/config.h"
#include "tests/expect_error.h"
#include "train/mlp_classifier.h"

namespace engine {
namespace {

using testing::error_of;

TEST(MlpSettings, ReadsTheConfigAndKeepsDefaultsForAbsentKeys) {
  const MlpTrainSpec spec = read_mlp_train_spec(
      Config::parse("[model]\nhidden = 64\n[train]\nepochs = 1\nlr = 0.01\n[data]\ntrain_limit = 500\n"));
  EXPECT_EQ(spec.hidden, 64);
  EXPECT_EQ(spec.epochs, 1);
  EXPECT_DOUBLE_EQ(spec.lr, 0.01);
  EXPECT_EQ(spec.train_limit, 500);
  EXPECT_EQ(spec.batch_size, MlpTrainSpec().batch_size);
  EXPECT_EQ(spec.test_limit, 0);
}

TEST(MlpSettings, AnOutOfRangeValueNamesTheFileSectionKeyAndValue) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"train.batch_size=0", "[train] batch_size = '0' must be >= 1"},
      {"train.batch_size=-1", "[train] batch_size = '-1' must be >= 1"},
      {"train.epochs=0", "[train] epochs = '0' must be >= 1"},
      {"train.epochs=-1", "[train] epochs = '-1' must be >= 1"},
      {"model.hidden=-5", "[model] hidden = '-5' must be >= 1"},
      {"train.lr=-1", "[train] lr = '-1' must be in [0, inf)"},
      {"train.weight_decay=-0.5", "[train] weight_decay = '-0.5' must be in [0, inf)"},
      {"train.seed=-3", "[train] seed = '-3' must be >= 0"},
      {"data.train_limit=-1", "[data] train_limit = '-1' must be >= 0"},
      {"data.test_limit=-2", "[data] test_limit = '-2' must be >= 0"},
  };
  for (const auto& [assignment, message] : cases) {
    Config config = Config::parse("", "mlp.ini");
    config.apply_override(assignment);
    EXPECT_EQ(error_of([&] { read_mlp_train_spec(config); }), "<override>: " + message) << assignment;
  }
}

TEST(Learning, MlpLearnsFashionMnist) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(dir)) {
    if (std::getenv("CI")) FAIL() << "missing " << dir << " (make install-deps installs it)";
    GTEST_SKIP() << "missing " << dir;
  }
  auto train = data::IdxDataset::from_dir(dir, data::Split::Train);
  auto test = data::IdxDataset::from_dir(dir, data::Split::Test);
  MlpTrainSpec spec;
  spec.hidden = 128;
  spec.epochs = 2;
  spec.train_limit = 12000;
  spec.test_limit = 2000;
  spec.progress = false;
  MlpTrainResult result = train_mlp_classifier(train, test, spec);
  // Chance is 10%; a linear model reaches ~80%. 2 epochs on 12k images give ~82-84%.
  EXPECT_GE(result.test_accuracy, 0.80);
  EXPECT_LT(result.train_loss, 0.6);
}

// Images of one size (zeros) with the given labels.
class TinyDataset : public data::Dataset {
 public:
  TinyDataset(int height, int width, std::vector<int64_t> labels, int num_classes)
      : height_(height), width_(width), labels_(std::move(labels)), num_classes_(num_classes) {}
  size_t size() const override { return labels_.size(); }
  int num_classes() const override { return num_classes_; }
  data::Sample get(size_t i) const override { return {data::Image(height_, width_, 1), labels_.at(i)}; }
  int64_t label(size_t i) const override { return labels_.at(i); }
  std::string name(size_t i) const override { return "tiny-" + std::to_string(height_) + "#" + std::to_string(i); }

 private:
  int height_, width_;
  std::vector<int64_t> labels_;
  int num_classes_;
};

TEST(Learning, MlpRefusesATestSetThatDoesNotMatchTheTrainSet) {
  const TinyDataset train(28, 28, {0, 1, 2, 1}, 3);
  MlpTrainSpec spec;
  spec.hidden = 4;
  spec.epochs = 1;
  spec.batch_size = 2;
  spec.progress = false;
  EXPECT_NO_THROW(train_mlp_classifier(train, TinyDataset(28, 28, {2, 0}, 3), spec));

  // 14x56 has as many pixels as 28x28, so only the size itself tells them apart.
  EXPECT_EQ(error_of([&] { train_mlp_classifier(train, TinyDataset(14, 56, {0, 1}, 2), spec); }),
            "test image tiny-14#0 is 14x56x1 (height x width x channels), but the train images (tiny-28#0) are "
            "28x28x1");
  EXPECT_EQ(error_of([&] { train_mlp_classifier(train, TinyDataset(28, 28, {0, 1, 3}, 4), spec); }),
            "test image tiny-28#2 has label 3, not one of the train set's 3 classes (0-2)");
}

}  // namespace
}  // namespace engine

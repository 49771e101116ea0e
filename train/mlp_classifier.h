// The engine's smallest end-to-end job: an MLP classifier (Linear -> GELU ->
// Linear) trained with AdamW + warmup/cosine on flattened images. It proves the
// core (tensors, autograd, ops, optimizer) learns on real data; the README's
// first command runs it until the distillation pipeline replaces it.
#pragma once
#include <string>

#include "data/dataset.h"
#include "engine/tensor.h"

namespace engine {

struct MlpTrainSpec {
  int64_t hidden = 256;
  int64_t epochs = 3;
  int64_t batch_size = 128;
  double lr = 2e-3;
  double weight_decay = 0.01;
  double warmup_fraction = 0.05;
  uint64_t seed = 0;
  int64_t train_limit = 0;  // > 0: use only the first N training images
  int64_t test_limit = 0;
  std::string metrics_path;  // JSONL log, one line per epoch ("" = none); its folder is created
  bool progress = true;
};

struct MlpTrainResult {
  double train_loss = 0.0;  // mean over the last epoch
  double test_accuracy = 0.0;
  double images_per_second = 0.0;
  int64_t parameters = 0;
};

// Images as float [N, C*H*W] scaled to [0, 1] and standardised with the
// training set's mean/std; labels int64 [N].
struct FlatImages {
  Tensor images;
  Tensor labels;
};
class Config;

// ./train_mlp's [model] hidden, [train] epochs / batch_size / lr / weight_decay
// / seed and [data] train_limit / test_limit, each range-checked: an error names
// the file, the [section] key and the value.
MlpTrainSpec read_mlp_train_spec(const Config& config);

FlatImages flatten_dataset(const data::Dataset& dataset, int64_t limit, double mean, double stddev);

// The model's input and output sizes come from the train set: test images of
// another size, or test labels that are not one of its classes, would give a
// meaningless accuracy (or none), so they are errors naming the test item.
// (train_mlp_classifier checks this too; a tool calls it before it touches
// its output folder.)
void check_test_matches_train(const data::Dataset& train, const data::Dataset& test);

MlpTrainResult train_mlp_classifier(const data::Dataset& train, const data::Dataset& test, const MlpTrainSpec& spec);

}  // namespace engine

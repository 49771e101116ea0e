#include "train/mlp_classifier.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "engine/config.h"
#include "engine/ops/ops.h"
#include "engine/optim/optimizer.h"
#include "layers/linear.h"
#include "train/metrics.h"
#include "train/progress.h"

namespace engine {

MlpTrainSpec read_mlp_train_spec(const Config& c) {
  MlpTrainSpec spec;
  spec.hidden = c.get_int_at_least("model", "hidden", spec.hidden, 1);
  spec.epochs = c.get_int_at_least("train", "epochs", spec.epochs, 1);
  spec.batch_size = c.get_int_at_least("train", "batch_size", spec.batch_size, 1);
  spec.lr = c.get_double_in("train", "lr", spec.lr, 0.0, INFINITY);
  spec.weight_decay = c.get_double_in("train", "weight_decay", spec.weight_decay, 0.0, INFINITY);
  spec.seed = static_cast<uint64_t>(c.get_int_at_least("train", "seed", 0, 0));
  spec.train_limit = c.get_int_at_least("data", "train_limit", 0, 0);
  spec.test_limit = c.get_int_at_least("data", "test_limit", 0, 0);
  return spec;
}

FlatImages flatten_dataset(const data::Dataset& dataset, int64_t limit, double mean, double stddev) {
  const int64_t n = limit > 0 ? std::min<int64_t>(limit, dataset.size()) : static_cast<int64_t>(dataset.size());
  check(n > 0, "flatten_dataset: the dataset is empty");
  const data::Image first = dataset.get(0).image;
  const int64_t features = static_cast<int64_t>(first.pixels.size());
  std::vector<float> pixels(static_cast<size_t>(n * features));
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    data::Sample sample = dataset.get(static_cast<size_t>(i));
    check(static_cast<int64_t>(sample.image.pixels.size()) == features, "{}: image size differs from the first",
          dataset.name(static_cast<size_t>(i)));
    for (int64_t j = 0; j < features; ++j) {
      pixels[i * features + j] = static_cast<float>((sample.image.pixels[j] / 255.0 - mean) / stddev);
    }
    labels[i] = sample.label;
  }
  return {Tensor::from_vector(pixels, {n, features}), Tensor::from_vector(labels, {n})};
}

void check_test_matches_train(const data::Dataset& train, const data::Dataset& test) {
  const data::Image train_image = train.get(0).image, test_image = test.get(0).image;
  check(test_image.height == train_image.height && test_image.width == train_image.width &&
            test_image.channels == train_image.channels,
        "test image {} is {}x{}x{} (height x width x channels), but the train images ({}) are {}x{}x{}",
        test.name(0), test_image.height, test_image.width, test_image.channels, train.name(0), train_image.height,
        train_image.width, train_image.channels);
  for (size_t i = 0; i < test.size(); ++i) {
    check(test.label(i) >= 0 && test.label(i) < train.num_classes(),
          "test image {} has label {}, not one of the train set's {} classes (0-{})", test.name(i), test.label(i),
          train.num_classes(), train.num_classes() - 1);
  }
}

namespace {

struct Mlp2 {
  Linear fc1, fc2;
  Tensor forward(const Tensor& x) const { return fc2.forward(gelu(fc1.forward(x))); }
  std::vector<Tensor> parameters() {
    std::vector<Tensor> params;
    for (auto* layer : {&fc1, &fc2}) {
      layer->visit(layer == &fc1 ? "fc1" : "fc2", [&](const std::string& name, Tensor& p) {
        p.set_name(name).set_requires_grad(true);
        params.push_back(p);
      });
    }
    return params;
  }
};

double accuracy(const Mlp2& model, const FlatImages& test, int64_t batch_size) {
  NoGradGuard no_grad;
  const int64_t n = test.images.size(0);
  int64_t correct = 0;
  for (int64_t start = 0; start < n; start += batch_size) {
    const int64_t count = std::min(batch_size, n - start);
    std::vector<int64_t> predicted = argmax(model.forward(narrow(test.images, 0, start, count)), 1).to_ints();
    std::vector<int64_t> truth = narrow(test.labels, 0, start, count).to_ints();
    for (int64_t i = 0; i < count; ++i) correct += predicted[i] == truth[i];
  }
  return static_cast<double>(correct) / n;
}

}  // namespace

MlpTrainResult train_mlp_classifier(const data::Dataset& train, const data::Dataset& test, const MlpTrainSpec& spec) {
  // Fashion-MNIST's pixel statistics; they only centre the inputs, so any
  // dataset of 8-bit images trains fine with them.
  const double mean = 0.2860, stddev = 0.3530;
  FlatImages train_data = flatten_dataset(train, spec.train_limit, mean, stddev);
  FlatImages test_data = flatten_dataset(test, spec.test_limit, mean, stddev);  // both non-empty
  check_test_matches_train(train, test);
  const int64_t n = train_data.images.size(0), features = train_data.images.size(1);

  Rng rng(spec.seed);
  Mlp2 model{Linear(features, spec.hidden, true, rng), Linear(spec.hidden, train.num_classes(), true, rng)};
  std::vector<Tensor> params = model.parameters();
  auto optimizer = make_adamw(decay_groups(params, spec.weight_decay), {spec.lr});
  const int64_t steps_per_epoch = n / spec.batch_size;
  check(steps_per_epoch > 0, "batch_size {} is larger than the {} training images", spec.batch_size, n);
  WarmupCosineSchedule schedule;
  schedule.base_lr = spec.lr;
  schedule.total_steps = steps_per_epoch * spec.epochs;
  schedule.warmup_steps = static_cast<int64_t>(spec.warmup_fraction * schedule.total_steps);

  std::unique_ptr<MetricsLog> log;
  if (!spec.metrics_path.empty()) {
    std::filesystem::create_directories(std::filesystem::absolute(spec.metrics_path).parent_path());
    log = std::make_unique<MetricsLog>(spec.metrics_path);
  }
  MlpTrainResult result;
  for (Tensor& p : params) result.parameters += p.numel();
  std::vector<int64_t> order(static_cast<size_t>(n));
  int64_t step = 0;
  double seconds = 0.0;
  for (int64_t epoch = 0; epoch < spec.epochs; ++epoch) {
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng.generator());
    ProgressBar bar(fmt::format("epoch {}/{}", epoch + 1, spec.epochs), steps_per_epoch * spec.batch_size);
    double loss_sum = 0.0;
    for (int64_t b = 0; b < steps_per_epoch; ++b) {
      std::vector<int64_t> batch(order.begin() + b * spec.batch_size, order.begin() + (b + 1) * spec.batch_size);
      const DeviceIndex indices(Tensor::from_vector(batch, {spec.batch_size}), train_data.images.device());
      Tensor loss = cross_entropy(model.forward(index_select(train_data.images, 0, indices)),
                                  index_select(train_data.labels, 0, indices));
      optimizer->zero_grad();
      loss.backward();
      optimizer->set_lr(schedule.lr_at(step++));
      optimizer->step();
      loss_sum += loss.item<double>();
      if (spec.progress) bar.update(spec.batch_size, fmt::format("loss {:.4f}", loss_sum / (b + 1)));
    }
    seconds += bar.elapsed_seconds();
    result.train_loss = loss_sum / steps_per_epoch;
    result.test_accuracy = accuracy(model, test_data, 1024);
    if (spec.progress) bar.finish(fmt::format("loss {:.4f} test acc {:.2f}%", result.train_loss, 100 * result.test_accuracy));
    if (log) {
      log->write({{"epoch", epoch + 1}, {"train_loss", result.train_loss}, {"test_accuracy", result.test_accuracy},
                  {"lr", optimizer->lr()}});
    }
  }
  result.images_per_second = per_second(spec.epochs * steps_per_epoch * spec.batch_size, seconds);
  return result;
}

}  // namespace engine

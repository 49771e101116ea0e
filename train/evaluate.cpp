#include "train/evaluate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <unordered_map>
#include <utility>

#include "data/subset.h"
#include "data/transforms.h"
#include "engine/autograd.h"
#include "engine/bench_timing.h"
#include "engine/ops/index/index.h"
#include "engine/ops/matmul/matmul.h"
#include "engine/ops/reduce/reduce.h"
#include "engine/ops/view/view.h"
#include "models/avit.h"
#include "train/progress.h"

namespace engine {

namespace {

// Rank of the true label among the logits row: 0 = top-1. A tie goes to the
// lower class, as the predicted class does, and a row holding a NaN ranks it
// last: a diverged model must not score, whichever logit diverged.
int64_t rank_of(const float* row, int64_t classes, int64_t label) {
  const float own = row[label];
  int64_t rank = 0;
  for (int64_t c = 0; c < classes; ++c) {
    if (std::isnan(row[c])) return classes;
    rank += row[c] > own || (row[c] == own && c < label);
  }
  return rank;
}

}  // namespace

namespace {

data::Interp interpolation_of(const Preprocess& p) {
  check(p.interpolation == "bilinear" || p.interpolation == "bicubic",
        "preprocessing: interpolation '{}' is not supported (bilinear or bicubic)", p.interpolation);
  return p.interpolation == "bilinear" ? data::Interp::Bilinear : data::Interp::Bicubic;
}

// ToTensor + Normalize with the model's mean and std, rounded to float32 as PyTorch holds them.
struct Normalize {
  float mean[3], stddev[3];
  explicit Normalize(const Preprocess& p)
      : mean{static_cast<float>(p.mean[0]), static_cast<float>(p.mean[1]), static_cast<float>(p.mean[2])},
        stddev{static_cast<float>(p.std[0]), static_cast<float>(p.std[1]), static_cast<float>(p.std[2])} {}
  void operator()(const data::Image& image, float* out) const { data::to_normalized_chw(image, mean, stddev, out); }
};

}  // namespace

data::Transform eval_transform(const Preprocess& p, bool random_flip) {
  const data::Interp interp = interpolation_of(p);
  const Normalize normalize(p);
  const int size = static_cast<int>(p.input_size);
  const double crop_pct = p.crop_pct;
  return [=](const data::Image& image, float* out, std::mt19937_64& rng) {
    data::Image view = data::resize_and_center_crop(image, size, crop_pct, interp);
    if (random_flip && (rng() & 1)) view = data::hflip(view);
    normalize(view, out);
  };
}

data::Transform crop_flip_transform(const Preprocess& p, int reflect_padding) {
  const data::Interp interp = interpolation_of(p);
  const Normalize normalize(p);
  const int size = static_cast<int>(p.input_size);
  check(reflect_padding >= 0 && reflect_padding < size, "random crop: padding {} must be in [0, {})",
        reflect_padding, size);
  const double crop_pct = p.crop_pct;
  return [=](const data::Image& image, float* out, std::mt19937_64& rng) {
    data::Image view = data::resize_and_center_crop(image, size, crop_pct, interp);
    if (reflect_padding > 0) view = data::random_crop_reflect_pad(view, size, reflect_padding, rng);
    if (rng() & 1) view = data::hflip(view);
    normalize(view, out);
  };
}

LogitsFn inference_logits(VisionTransformer& model) {
  if (model.config.halting) return [&model](const Tensor& x) { return avit_forward_compact(model, x); };
  return [&model](const Tensor& x) { return model.forward(x); };
}

RetentionMeter::RetentionMeter(VisionTransformer& model) : model_(model), active_(model.blocks.size(), 0) {
  halting_config(model);  // an error for a model without halting
}

LogitsFn RetentionMeter::logits() {
  return [this](const Tensor& images) {
    CompactTrace trace;
    Tensor logits = avit_forward_compact(model_, images, &trace);
    for (size_t l = 0; l < trace.active.size(); ++l) active_[l] += trace.active[l];
    tokens_ += images.size(0) * model_.config.num_tokens();
    return logits;
  };
}

std::vector<double> RetentionMeter::retention() const {
  std::vector<double> fractions;
  for (int64_t count : active_) fractions.push_back(static_cast<double>(count) / std::max<int64_t>(tokens_, 1));
  return fractions;
}

double RetentionMeter::mean_retention() const {
  const std::vector<double> fractions = retention();
  double total = 0;
  for (double f : fractions) total += f;
  return total / static_cast<double>(fractions.size());
}

Tensor first_images(const data::Dataset& dataset, const Preprocess& preprocess, int64_t count, Device device) {
  data::LoaderOptions options;
  options.batch_size = static_cast<size_t>(std::max<int64_t>(count, 1));
  options.num_workers = 0;
  options.height = options.width = static_cast<int>(preprocess.input_size);
  data::DataLoader loader(dataset, eval_transform(preprocess), options);
  loader.start_epoch(0);
  data::Batch batch;
  check(loader.next(batch), "no images to load from the dataset");
  return Tensor::from_vector(batch.images, {batch.n, batch.c, batch.h, batch.w}).to(device);
}

Tensor timing_images(const data::Dataset& dataset, const Preprocess& preprocess, int64_t count, Device device) {
  // Spread over the set: an ImageFolder lists its items class by class, and
  // an A-ViT's speed depends on the images.
  const size_t wanted = static_cast<size_t>(std::max<int64_t>(count, 1));
  const data::Subset spread(dataset, data::evenly_spaced_items(dataset.size(), wanted));  // (at most all of it)
  const Tensor images = first_images(spread, preprocess, count, device);
  std::vector<Tensor> copies(static_cast<size_t>((count + images.size(0) - 1) / images.size(0)), images);
  return copies.size() == 1 ? images : narrow(concat(copies, 0), 0, 0, count);
}

namespace {

// Each run's median wall time (ms) over `repeats` rounds in which the runs
// take turns, each call waited for, after one untimed round (caches, allocators).
std::vector<double> median_wall_ms(Device device, const std::vector<std::function<void()>>& runs, int64_t repeats) {
  check(repeats >= 1, "latency: {} repeats (at least 1 is needed for a median)", repeats);
  std::vector<std::vector<double>> times(runs.size());
  for (int64_t round = 0; round <= repeats; ++round) {
    for (size_t i = 0; i < runs.size(); ++i) {
      device_synchronize(device);
      const auto start = std::chrono::steady_clock::now();
      runs[i]();
      device_synchronize(device);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      if (round > 0) times[i].push_back(ms);
    }
  }
  std::vector<double> medians;
  for (std::vector<double>& t : times) medians.push_back(median(std::move(t)));
  return medians;
}

}  // namespace

std::vector<double> latencies_ms(const std::vector<LogitsFn>& models, const Tensor& images, int64_t repeats) {
  NoGradGuard no_grad;
  std::vector<std::function<void()>> runs;
  for (const LogitsFn& logits_of : models) runs.push_back([&forward = logits_of, &images] { forward(images); });
  return median_wall_ms(images.device(), runs, repeats);
}

std::vector<double> graph_latencies_ms(const std::vector<LogitsFn>& models, const Tensor& images, int64_t repeats) {
  NoGradGuard no_grad;
  std::vector<std::unique_ptr<DeviceGraph>> graphs;
  std::vector<std::function<void()>> runs;
  for (const LogitsFn& logits_of : models) {
    logits_of(images);  // first calls (GEMM plans, workspaces) stay out of the capture
    graphs.push_back(std::make_unique<DeviceGraph>(images.device(), [&logits_of, &images] { logits_of(images); }));
    runs.push_back([graph = graphs.back().get()] { graph->replay(); });
  }
  return median_wall_ms(images.device(), runs, repeats);
}

nlohmann::json LatencyTable::by_batch(const std::vector<double>& ms) const {
  check(ms.size() == batches.size(), "LatencyTable: {} times for {} batch sizes", ms.size(), batches.size());
  nlohmann::json out = nlohmann::json::object();
  for (size_t i = 0; i < batches.size(); ++i) out[fmt::format("b{}", batches[i])] = ms[i];
  return out;
}

LatencyTable time_models(const std::vector<VisionTransformer*>& models, const data::Dataset& dataset,
                         const std::vector<int64_t>& batches, int64_t repeats, Device device) {
  check(!models.empty() && !batches.empty(), "time_models: {} models at {} batch sizes", models.size(),
        batches.size());
  std::vector<LogitsFn> forwards;
  bool graphs = device.is_cuda();
  for (VisionTransformer* model : models) {
    forwards.push_back(inference_logits(*model));
    graphs = graphs && !model->config.halting;
  }
  LatencyTable table{batches, std::vector<std::vector<double>>(models.size()), {}};
  if (graphs) table.graph_ms.resize(models.size());
  for (int64_t batch : batches) {
    fmt::print("timing {} model(s) at batch {}\n", models.size(), batch);
    // Spread over the set at every batch size: the first images of a larger
    // spread batch would be one class again.
    const Tensor batch_images = timing_images(dataset, models.front()->config.preprocess, batch, device);
    const std::vector<double> eager = latencies_ms(forwards, batch_images, repeats);
    const std::vector<double> replayed = graphs ? graph_latencies_ms(forwards, batch_images, repeats)
                                                : std::vector<double>{};
    for (size_t i = 0; i < models.size(); ++i) {
      table.eager_ms[i].push_back(eager[i]);
      if (graphs) table.graph_ms[i].push_back(replayed[i]);
    }
  }
  return table;
}

ModelEvaluation evaluate_model(VisionTransformer& model, const data::Dataset& dataset, const EvalOptions& options) {
  if (!model.config.halting) {
    return {evaluate_classifier(inference_logits(model), dataset, model.config.preprocess, options), {}, 1.0};
  }
  RetentionMeter meter(model);
  EvalResult result = evaluate_classifier(meter.logits(), dataset, model.config.preprocess, options);
  return {std::move(result), meter.retention(), meter.mean_retention()};
}

nlohmann::json evaluation_report(const ModelEvaluation& evaluation, VisionTransformer& model) {
  const EvalResult& eval = evaluation.result;
  nlohmann::json report = {{"top1", eval.top1},         {"top5", eval.top5},   {"params", model.num_parameters()},
                           {"eval_images", eval.images}, {"gflops", eval.gflops},
                           {"mean_retention", evaluation.mean_retention}};
  if (model.config.halting) report["retention"] = evaluation.retention;
  return report;
}

void check_labels_fit(const VitConfig& model, const data::LabeledDataset& dataset) {
  check(static_cast<int64_t>(dataset.num_classes()) <= model.num_classes,
        "{} has {} classes but the model's head has {}: is it the right data (or model)?", dataset.root(),
        dataset.num_classes(), model.num_classes);
  // A class named in the model's label_names must have the same index here:
  // with a class folder missing, every later class would be scored against
  // its neighbour's logit. (Names the model does not list, such as ImageNet
  // synsets against readable names, cannot be checked.)
  std::unordered_map<std::string, size_t> model_labels;  // (ImageNet-21k has 21,843 classes)
  for (size_t i = 0; i < model.label_names.size(); ++i) model_labels.emplace(model.label_names[i], i);
  const std::vector<std::string>& classes = dataset.classes();
  size_t named_classes = 0;
  for (size_t label = 0; label < classes.size(); ++label) {
    const auto named = model_labels.find(classes[label]);
    if (named == model_labels.end()) continue;
    const size_t model_label = named->second;
    check(model_label == label,
          "{}: class '{}' is label {} here but label {} in the model's label_names: is a class missing, or "
          "the class list in another order?", dataset.root(), classes[label], label, model_label);
    ++named_classes;
  }
  // Fewer classes than the head, and not all checked by name: ImageNet synset
  // folders without the synset list are labelled 0..N-1 in sorted order.
  if (static_cast<int64_t>(classes.size()) < model.num_classes && named_classes < classes.size()) {
    fmt::print(stderr,
               "warning: {} has {} classes but the model's head has {}: they are scored as the model's classes "
               "0..{}, which means nothing unless they are those; give the full class list where the tool takes "
               "one (--synsets of eval_imagenet and analyze_sparsity, e.g. ImageNet's 1000 sorted synsets)\n",
               dataset.root(), classes.size(), model.num_classes, classes.size() - 1);
  }
}

EvalResult evaluate_classifier(const LogitsFn& logits_of, const data::Dataset& full, const Preprocess& preprocess,
                               const EvalOptions& options) {
  std::unique_ptr<data::Subset> limited;
  if (options.limit > 0) {
    // Spread over the whole set: a class-sorted folder's first N would be one class.
    const size_t count = static_cast<size_t>(options.limit);
    limited = std::make_unique<data::Subset>(full, data::evenly_spaced_items(full.size(), count));
  }
  const data::Dataset& dataset = limited ? *limited : full;
  data::LoaderOptions loader_options;
  loader_options.batch_size = static_cast<size_t>(options.batch_size);
  loader_options.num_workers = options.num_workers;
  loader_options.skip_bad_images = options.skip_bad_images;
  loader_options.height = loader_options.width = static_cast<int>(preprocess.input_size);
  data::DataLoader loader(dataset, eval_transform(preprocess), loader_options);
  loader.start_epoch(0);

  NoGradGuard no_grad;
  EvalResult result;
  const int64_t flops_before = gemm_flops_so_far();
  int64_t top1 = 0, top5 = 0;
  ProgressBar bar("eval", static_cast<int64_t>(dataset.size()));
  for (data::Batch batch; loader.next(batch);) {
    Tensor images = Tensor::from_vector(batch.images, {batch.n, batch.c, batch.h, batch.w}).to(options.device);
    Tensor logits = logits_of(images).to(Device::cpu()).to(DType::F32).contiguous();
    const int64_t classes = logits.size(1);
    const float* values = logits.data<float>();
    // The first maximum of each row, or its first NaN.
    const Tensor predicted = argmax(logits, 1);
    for (int i = 0; i < batch.n; ++i) {
      const float* row = values + i * classes;
      check(batch.labels[i] >= 0 && batch.labels[i] < classes, "{}: label {} is outside the model's {} classes",
            dataset.name(batch.indices[i]), batch.labels[i], classes);
      const int64_t rank = rank_of(row, classes, batch.labels[i]);
      top1 += rank == 0;
      top5 += rank < 5;
      result.predictions.emplace_back(dataset.name(batch.indices[i]), predicted.data<int64_t>()[i]);
    }
    result.images += batch.n;
    const double running_top1 = static_cast<double>(top1) / result.images;
    if (options.progress) bar.update(batch.n, fmt::format("top-1 {:.2f}%", 100.0 * running_top1));
    if (options.log) {
      options.log->write({{"images", result.images},
                          {"top1", running_top1},
                          {"top5", static_cast<double>(top5) / result.images},
                          {"images_per_second", per_second(result.images, bar.elapsed_seconds())}});
    }
  }
  result.seconds = bar.elapsed_seconds();
  result.bad_images = loader.bad_images();
  // Skipped images never reach the bar: say why it stops short of 100%.
  if (options.progress) {
    bar.finish(result.bad_images > 0 ? fmt::format("top-1 {:.2f}%, {} undecodable skipped",
                                                   100.0 * top1 / std::max<int64_t>(1, result.images),
                                                   result.bad_images)
                                     : "");
  }
  check(result.images > 0, "evaluation saw no images");
  result.top1 = static_cast<double>(top1) / result.images;
  result.top5 = static_cast<double>(top5) / result.images;
  result.images_per_second = per_second(result.images, result.seconds);
  result.gflops = static_cast<double>(gemm_flops_so_far() - flops_before) / static_cast<double>(result.images) / 1e9;
  std::sort(result.predictions.begin(), result.predictions.end());
  return result;
}

}  // namespace engine

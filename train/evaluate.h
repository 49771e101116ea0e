// Classifier evaluation over an image dataset: timm's eval preprocessing from
// the model's pretrained_cfg, batched multi-threaded loading, top-1/top-5,
// throughput, optional per-image predictions.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/loader.h"
#include "models/vit.h"
#include "train/metrics.h"

namespace engine {

// The eval transform of a model: resize the shorter side to
// floor(size / crop_pct) with its interpolation, center crop, normalise.
// With random_flip, a horizontal flip with probability 1/2 (for training on
// the teacher's own view of the data).
data::Transform eval_transform(const Preprocess& preprocess, bool random_flip = false);

// The training augmentation of timm's CIFAR recipes: the eval view, then
// torchvision RandomCrop(size, padding=reflect_padding, padding_mode="reflect")
// (skipped for padding 0) and RandomHorizontalFlip, then normalise.
data::Transform crop_flip_transform(const Preprocess& preprocess, int reflect_padding);

struct EvalOptions {
  int64_t batch_size = 256;
  int64_t limit = 0;         // > 0: only N images, spread evenly over the dataset
  int num_workers = 2;
  bool skip_bad_images = false;
  bool progress = true;
  Device device = Device::cpu();
  MetricsLog* log = nullptr;  // if set: one line per batch (images so far, running top-1/top-5, img/s)
};

struct EvalResult {
  int64_t images = 0;
  double top1 = 0.0, top5 = 0.0;  // fractions
  double images_per_second = 0.0;
  double seconds = 0.0;
  size_t bad_images = 0;
  double gflops = 0.0;  // GEMM FLOPs per image, averaged over the images (an A-ViT's depend on them)
  std::vector<std::pair<std::string, int64_t>> predictions;  // (item name, predicted class), sorted by name
};

using LogitsFn = std::function<Tensor(const Tensor& images)>;

// The model's inference forward: for an A-ViT (config.halting set) the compacted
// path, tokens really dropped (models/avit.h); else the plain forward.
LogitsFn inference_logits(VisionTransformer& model);

// Wraps an A-ViT's compacted forward (tokens really dropped), counting the
// active tokens that enter each layer over every batch it runs (halted tokens
// that the path carries, masked, for a block or so are not counted). The model
// must outlive it.
class RetentionMeter {
 public:
  explicit RetentionMeter(VisionTransformer& model);
  LogitsFn logits();                    // the counting forward
  std::vector<double> retention() const;  // per layer: fraction of all tokens entering it
  double mean_retention() const;          // mean over layers

 private:
  VisionTransformer& model_;
  std::vector<int64_t> active_;
  int64_t tokens_ = 0;
};

// The first `count` images of a dataset (fewer if it is smaller) through the
// eval transform, as one [count, C, H, W] batch on `device`: inputs for
// pictures, and (of a spread subset) for timing_images.
Tensor first_images(const data::Dataset& dataset, const Preprocess& preprocess, int64_t count, Device device);

// A batch of exactly `count` images for timing at that batch size: images
// spread evenly over the dataset (as EvalOptions::limit picks them), repeated
// from the start when the dataset holds fewer.
Tensor timing_images(const data::Dataset& dataset, const Preprocess& preprocess, int64_t count, Device device);

// Each model's median wall time (ms) for a forward of `images`, over
// `repeats` rounds after one untimed round. The models take turns within a
// round (A, B, A, B, ...), so that a machine whose speed drifts (a shared VM,
// a GPU's clocks) slows the models it compares alike.
std::vector<double> latencies_ms(const std::vector<LogitsFn>& models, const Tensor& images, int64_t repeats);
// The same for each forward captured once as a DeviceGraph (GPU only) and
// replayed: the GPU's time alone, without the host's cost of issuing each op.
// The forwards must be fixed sequences of GPU work (not A-ViT's compacted
// one, which reads the halting decisions on the host).
std::vector<double> graph_latencies_ms(const std::vector<LogitsFn>& models, const Tensor& images, int64_t repeats);

// Models timed at several batch sizes by the two functions above.
struct LatencyTable {
  std::vector<int64_t> batches;
  std::vector<std::vector<double>> eager_ms;  // [model][batch]: latencies_ms
  std::vector<std::vector<double>> graph_ms;  // [model][batch]: graph_latencies_ms, or empty

  // {"b<N>": ms, ...} for one model's row of eager_ms or graph_ms.
  nlohmann::json by_batch(const std::vector<double>& ms) const;
};

// Each model's median latency (`repeats` rounds, the models taking turns) at
// every batch size, on timing_images of `dataset` through the first model's
// preprocessing (so the models should share it, as a hybrid or an
// A-ViT shares its teacher's). On a GPU the forwards are also replayed as
// graphs, unless a model halts tokens: A-ViT's compacted forward reads its
// decisions on the host, and leaving out every model's graph timings keeps
// the columns comparable.
LatencyTable time_models(const std::vector<VisionTransformer*>& models, const data::Dataset& dataset,
                         const std::vector<int64_t>& batches, int64_t repeats, Device device);

// Fails, naming both counts and the folder, when the dataset has more classes
// than the model's head: its labels past the head would fail, or score, late.
// Also fails when a class that the model's label_names list has another index
// in the dataset (a class folder missing, or the class list in another order).
// Warns on stderr when the dataset has fewer classes than the head and not all
// of them are in label_names: without a class list its labels are a guess.
void check_labels_fit(const VitConfig& model, const data::LabeledDataset& dataset);

EvalResult evaluate_classifier(const LogitsFn& logits_of, const data::Dataset& dataset, const Preprocess& preprocess,
                               const EvalOptions& options);

// A model evaluated as the tools report it: an A-ViT (config.halting set)
// with its tokens really dropped, counting the share of tokens entering each
// layer (RetentionMeter); a dense ViT keeps them all.
struct ModelEvaluation {
  EvalResult result;
  std::vector<double> retention;  // per layer; empty for a dense ViT
  double mean_retention = 1.0;
};
ModelEvaluation evaluate_model(VisionTransformer& model, const data::Dataset& dataset, const EvalOptions& options);
// The keys the tools' results.json give a model they evaluated: top1, top5,
// eval_images, params, gflops (GEMM FLOPs per image: an A-ViT's fewer by the
// tokens it dropped), mean_retention, and for an A-ViT its per-layer retention.
nlohmann::json evaluation_report(const ModelEvaluation& evaluation, VisionTransformer& model);

}  // namespace engine

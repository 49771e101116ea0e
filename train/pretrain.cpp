#include "train/pretrain.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>

#include "data/loader.h"
#include "data/open_dataset.h"
#include "data/random.h"
#include "data/subset.h"
#include "engine/ops/ops.h"
#include "engine/optim/optimizer.h"
#include "models/vit_checkpoint.h"
#include "train/batch_stream.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/metrics.h"
#include "train/progress.h"

namespace engine {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------- settings

namespace {

// [data] mean / std: three numbers.
void read_channel_stats(const Config& c, const char* key, double (&stats)[3]) {
  const std::vector<double> values = c.get_double_list("data", key, {stats[0], stats[1], stats[2]});
  check(values.size() == 3, "{}: [data] {} has {} values (needs 3, one per RGB channel)", c.where("data", key), key,
        values.size());
  for (int i = 0; i < 3; ++i) stats[i] = values[i];
}

// A preset, then explicit keys on top of it. The MLP width follows embed_dim
// at the preset's ratio unless mlp_ratio is given.
VitConfig read_model(const Config& c) {
  const std::string preset = c.get_string("model", "preset", "vit_cifar_tiny_patch4_32");
  VitConfig m = in_context(c, "model", "preset", [&] { return vit_preset(preset); });
  const double mlp_ratio = c.get_double("model", "mlp_ratio", static_cast<double>(m.mlp_hidden) / m.embed_dim);
  m.img_size = c.get_int_at_least("model", "img_size", m.img_size, 1);
  m.patch_size = c.get_int_at_least("model", "patch_size", m.patch_size, 1);
  m.embed_dim = c.get_int_at_least("model", "embed_dim", m.embed_dim, 1);
  m.depth = c.get_int_at_least("model", "depth", m.depth, 1);
  m.num_heads = c.get_int_at_least("model", "num_heads", m.num_heads, 1);
  m.mlp_hidden = std::llround(mlp_ratio * m.embed_dim);
  m.qkv_bias = c.get_bool("model", "qkv_bias", m.qkv_bias);
  m.class_token = c.get_bool("model", "class_token", m.class_token);
  m.global_pool = c.get_choice("model", "global_pool", m.global_pool, {"token", "avg"});
  m.fc_norm = m.global_pool == "avg";  // timm's default for average pooling
  m.num_classes = c.get_int_at_least("model", "num_classes", 0, 0);  // 0: from the training folder
  m.drop_path_rate = c.get_double_in("model", "drop_path_rate", 0.1, 0.0, 1.0);
  m.mixers.clear();
  m.preprocess.input_size = m.img_size;
  read_channel_stats(c, "mean", m.preprocess.mean);
  read_channel_stats(c, "std", m.preprocess.std);
  VitConfig probe = m;
  probe.num_classes = 1;  // checked against the data later
  in_context(c, "model", "", [&] { probe.validate(); });
  return m;
}

}  // namespace

PretrainSettings PretrainSettings::from_config(const Config& c) {
  PretrainSettings s;
  s.model = read_model(c);
  s.data = c.get_string("data", "path");
  s.train_subdir = c.get_string("data", "train_subdir", "");
  s.test_subdir = c.get_string("data", "test_subdir", "");
  s.train_limit = c.get_int_at_least("data", "train_limit", 0, 0);
  s.test_limit = c.get_int_at_least("data", "test_limit", 0, 0);
  s.crop_padding = static_cast<int>(c.get_int_at_least("data", "crop_padding", s.crop_padding, 0));
  check(s.crop_padding < s.model.img_size, "{}: [data] crop_padding = {} must be smaller than the image size {}",
        c.where("data", "crop_padding"), s.crop_padding, s.model.img_size);
  s.workers = static_cast<int>(c.get_int_at_least("data", "workers", s.workers, 0));
  s.epochs = c.get_int_at_least("train", "epochs", s.epochs, 1);
  s.batch_size = c.get_int_at_least("train", "batch_size", s.batch_size, 1);
  s.lr = c.get_double_in("train", "lr", s.lr, 0.0, INFINITY);
  s.min_lr = c.get_double_in("train", "min_lr", s.min_lr, 0.0, INFINITY);
  s.warmup_lr = c.get_double_in("train", "warmup_lr", s.warmup_lr, 0.0, INFINITY);
  s.warmup_epochs = c.get_int_at_least("train", "warmup_epochs", s.warmup_epochs, 0);
  check(s.warmup_epochs < s.epochs, "{}: [train] warmup_epochs = {} must be smaller than epochs = {}",
        c.where("train", "warmup_epochs"), s.warmup_epochs, s.epochs);
  s.weight_decay = c.get_double_in("train", "weight_decay", s.weight_decay, 0.0, INFINITY);
  s.beta1 = c.get_double_in("train", "beta1", s.beta1, 0.0, 1.0);
  s.beta2 = c.get_double_in("train", "beta2", s.beta2, 0.0, 1.0);
  s.label_smoothing = c.get_double_in("train", "label_smoothing", s.label_smoothing, 0.0, 1.0);
  s.clip_grad_norm = c.get_double_in("train", "clip_grad_norm", s.clip_grad_norm, 0.0, INFINITY);
  s.seed = static_cast<uint64_t>(c.get_int_at_least("train", "seed", 0, 0));
  s.eval_every_epochs = c.get_int_at_least("eval", "every_epochs", s.eval_every_epochs, 1);
  s.eval_batch_size = c.get_int_at_least("eval", "batch_size", s.eval_batch_size, 1);
  s.device = read_device(c);
  s.precision = c.get_choice("run", "precision", s.precision, {"fp32", "bf16"});
  s.time_limit_minutes = c.get_double_in("run", "time_limit_minutes", 0.0, 0.0, INFINITY);
  s.stop_after_steps = c.get_int_at_least("run", "stop_after_steps", 0, 0);
  s.log_every_steps = c.get_int_at_least("run", "log_every_steps", s.log_every_steps, 1);
  s.out_dir = c.get_string("output", "dir", s.out_dir);
  s.checkpoint_every_epochs = c.get_int_at_least("output", "checkpoint_every_epochs", s.checkpoint_every_epochs, 1);
  s.overwrite = c.get_bool("output", "overwrite", false);
  s.resume = c.get_bool("output", "resume", false);
  check(!(s.overwrite && s.resume), "{}: [output] overwrite and resume are both true: choose one",
        c.where("output", "resume"));
  return s;
}

json PretrainSettings::identity() const {
  json settings = {{"model.drop_path_rate", model.drop_path_rate},
                   {"data.mean", model.preprocess.mean},
                   {"data.std", model.preprocess.std},
                   {"data.train_subdir", train_subdir},
                   {"data.train_limit", train_limit},
                   {"data.crop_padding", crop_padding},
                   {"train.epochs", epochs},
                   {"train.batch_size", batch_size},
                   {"train.lr", lr},
                   {"train.min_lr", min_lr},
                   {"train.warmup_lr", warmup_lr},
                   {"train.warmup_epochs", warmup_epochs},
                   {"train.weight_decay", weight_decay},
                   {"train.beta1", beta1},
                   {"train.beta2", beta2},
                   {"train.label_smoothing", label_smoothing},
                   {"train.clip_grad_norm", clip_grad_norm},
                   {"train.seed", seed},
                   {"run.precision", precision}};
  const json architecture = vit_config_json(model)["model_args"];
  for (const auto& [key, value] : architecture.items()) settings["model." + key] = value;
  return settings;
}

// ---------------------------------------------------------------- the run

namespace {

constexpr const char* kCheckpointFolder = "checkpoint";
// Key of the drop-path RNG stream, apart from the loader's streams.
constexpr uint64_t kDropPathStream = 0xd409a7ULL;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A dataset split (an ImageFolder or CIFAR-10 binary batches, see data/open_dataset.h),
// limited to `limit` evenly spaced images when limit > 0.
class Split {
 public:
  Split(const std::string& data, const std::string& subdir, int64_t limit) : folder_(data::open_dataset(data, subdir)) {
    if (limit > 0) {
      subset_ = std::make_unique<data::Subset>(*folder_,
                                               data::evenly_spaced_items(folder_->size(), static_cast<size_t>(limit)));
    }
  }
  const data::Dataset& dataset() const { return subset_ ? static_cast<const data::Dataset&>(*subset_) : *folder_; }
  const data::LabeledDataset& folder() const { return *folder_; }

 private:
  std::unique_ptr<data::LabeledDataset> folder_;
  std::unique_ptr<data::Subset> subset_;
};

// The checkpoint to resume from ("" for a fresh start), after enforcing the
// overwrite / resume rules on the output folder.
std::string prepare_run_folder(const PretrainSettings& s) {
  const std::string checkpoint = (fs::path(s.out_dir) / kCheckpointFolder).string();
  if (s.resume) {
    check_out_dir(s.out_dir);
    const std::string found = find_complete_directory(checkpoint);
    if (found.empty()) fmt::print("resume: no checkpoint in {} yet, starting afresh\n", s.out_dir);
    fs::create_directories(s.out_dir);
    return found;
  }
  std::vector<std::string> outputs = atomic_directory_names(kCheckpointFolder);
  outputs.insert(outputs.end(), {"results.json", "metrics.jsonl"});
  prepare_out_dir(s.out_dir, s.overwrite, outputs, {}, /*resumable=*/true);
  return "";
}

// Names every setting that differs from the checkpoint's.
// A checkpoint's settings with its architecture as one "model.<key>" entry per
// key: checkpoints saved before those were compared one by one kept them in
// one "model" object.
json with_flat_model_keys(json saved) {
  if (!saved.contains("model") || !saved["model"].is_object()) return saved;
  for (const auto& [key, value] : saved["model"].items()) saved["model." + key] = value;
  saved.erase("model");
  return saved;
}

void check_same_identity(const json& saved_identity, const json& current, const std::string& checkpoint) {
  const json saved = with_flat_model_keys(saved_identity);
  std::vector<std::string> differences;
  for (const auto& [key, value] : current.items()) {
    const json old = saved.contains(key) ? saved[key] : json();
    if (old != value) differences.push_back(fmt::format("{} = {} (checkpoint: {})", key, value.dump(), old.dump()));
  }
  check(differences.empty(), "cannot resume from {}: settings differ from the checkpoint's: {} "
        "(restore them, or set [output] overwrite = true to start afresh)", checkpoint, fmt::join(differences, "; "));
}

// The progress saved in a checkpoint's train state, read key by key. The file
// may be damaged or edited by hand: a missing key, or a value of the wrong
// type or out of range, is an error naming the file and the key, raised before
// the resumed run writes anything.
class SavedProgress {
 public:
  SavedProgress(json progress, std::string file) : progress_(std::move(progress)), file_(std::move(file)) {}

  const json& object(const std::string& key) const {
    const json& value = field(key);
    check(value.is_object(), "cannot resume from {}: progress '{}' = {} is not a JSON object", file_, key,
          value.dump());
    return value;
  }

  // An integer in [0, max]. (nlohmann reads a non-negative one as unsigned,
  // one built in memory may be signed.)
  int64_t count(const std::string& key, int64_t max) const {
    const json& value = field(key);
    const bool non_negative = value.is_number_unsigned() || (value.is_number_integer() && value.get<int64_t>() >= 0);
    check(non_negative && value.get<uint64_t>() <= static_cast<uint64_t>(max),
          "cannot resume from {}: progress '{}' = {} is not an integer in [0, {}]", file_, key, value.dump(), max);
    return value.get<int64_t>();
  }

  double seconds(const std::string& key) const {
    const json& value = field(key);
    check(value.is_number() && value.get<double>() >= 0, "cannot resume from {}: progress '{}' = {} is not a "
          "number of seconds >= 0", file_, key, value.dump());
    return value.get<double>();
  }

  // A sum of losses: a number, or null for NaN or infinity (which JSON cannot
  // hold: a diverged run's are saved as null).
  double loss_sum(const std::string& key) const {
    const json& value = field(key);
    check(value.is_null() || value.is_number(), "cannot resume from {}: progress '{}' = {} is neither null nor a "
          "number", file_, key, value.dump());
    return value.is_null() ? std::numeric_limits<double>::quiet_NaN() : value.get<double>();
  }

  // An accuracy in [0, 1], or null before the first evaluation.
  json accuracy(const std::string& key) const {
    const json& value = field(key);
    check(value.is_null() || (value.is_number() && value.get<double>() >= 0 && value.get<double>() <= 1),
          "cannot resume from {}: progress '{}' = {} is neither null nor a number in [0, 1]", file_, key,
          value.dump());
    return value;
  }

 private:
  const json& field(const std::string& key) const {
    check(progress_.contains(key), "cannot resume from {}: its progress has no '{}' (damaged, or saved by an "
          "older ./pretrain: set [output] overwrite = true to start afresh)", file_, key);
    return progress_.at(key);
  }

  json progress_;
  std::string file_;
};

class Pretrainer {
 public:
  explicit Pretrainer(const PretrainSettings& s)
      : s_(s),
        start_(std::chrono::steady_clock::now()),
        train_(s.data, s.train_subdir, s.train_limit),
        test_(s.data, s.test_subdir, s.test_limit),
        model_(build_model()),
        params_(trainable_parameters()),
        optimizer_(make_adamw(decay_groups(params_, s.weight_decay), {s.lr, s.beta1, s.beta2})),
        steps_per_epoch_(steps_per_epoch()),
        schedule_(make_schedule()),
        loader_(train_.dataset(), crop_flip_transform(model_->config.preprocess, s.crop_padding), loader_options()),
        resume_from_(prepare_run_folder(s)) {
    const std::string metrics = (fs::path(s.out_dir) / "metrics.jsonl").string();
    if (resume_from_.empty()) {
      log_.emplace(metrics);
    } else {
      log_.emplace(metrics, restore());
      fmt::print("resumed from {} at step {} (epoch {})\n", resume_from_, step_, step_ / steps_per_epoch_);
      log_->write({{"phase", "resume"}, {"step", step_}, {"checkpoint", resume_from_}});
    }
  }

  json run() {
    fmt::print("pretrain: {} parameters, {} training images ({} steps of {} per epoch), {} epochs on {}\n",
               model_->num_parameters(), train_.dataset().size(), steps_per_epoch_, s_.batch_size, s_.epochs,
               s_.device.str());
    bool finished = true;
    for (int64_t epoch = step_ / steps_per_epoch_; epoch < s_.epochs && finished; ++epoch) {
      finished = train_epoch(epoch);
      if (finished) finished = finish_epoch(epoch);
    }
    if (!finished) fmt::print("stopped at step {} of {}: run again with resume = true to continue\n", step_,
                              total_steps());
    return write_results(finished);
  }

 private:
  std::unique_ptr<VisionTransformer> build_model() const {
    VitConfig config = s_.model;
    const int classes = train_.dataset().num_classes();
    check(config.num_classes == 0 || config.num_classes == classes,
          "[model] num_classes = {} but the training folder {} has {} classes", config.num_classes,
          train_.folder().root(), classes);
    config.num_classes = classes;
    config.label_names = train_.folder().classes();
    auto model = std::make_unique<VisionTransformer>(config, s_.seed);
    model->to(s_.device);
    return model;
  }

  std::vector<Tensor> trainable_parameters() {
    std::vector<Tensor> params;
    for (auto& [name, param] : model_->named_parameters()) params.push_back(param.set_requires_grad(true));
    return params;
  }

  int64_t steps_per_epoch() const {
    const int64_t images = static_cast<int64_t>(train_.dataset().size());
    check(images >= s_.batch_size, "the training set has {} images, fewer than [train] batch_size = {}", images,
          s_.batch_size);
    return images / s_.batch_size;  // the last partial batch is dropped, as timm does
  }

  int64_t total_steps() const { return s_.epochs * steps_per_epoch_; }

  WarmupCosineSchedule make_schedule() const {
    WarmupCosineSchedule schedule;
    schedule.base_lr = s_.lr;
    schedule.min_lr = s_.min_lr;
    schedule.warmup_start_lr = s_.warmup_lr;
    schedule.warmup_steps = s_.warmup_epochs * steps_per_epoch_;
    schedule.total_steps = total_steps();
    schedule.validate();
    return schedule;
  }

  data::LoaderOptions loader_options() const {
    data::LoaderOptions o;
    o.batch_size = static_cast<size_t>(s_.batch_size);
    o.shuffle = true;
    o.drop_last = true;
    o.num_workers = s_.workers;
    o.prefetch_batches = std::max(4, 2 * s_.workers);
    o.seed = s_.seed;
    o.height = o.width = static_cast<int>(model_->config.img_size);
    return o;
  }

  // ------------------------------------------------------------ checkpoints

  json progress() const {
    const LogPosition log = log_->position();
    return {{"step", step_},
            {"epoch", step_ / steps_per_epoch_},  // epoch and batch_in_epoch: for people reading the file
            {"batch_in_epoch", step_ % steps_per_epoch_},
            {"steps_per_epoch", steps_per_epoch_},
            {"last_top1", last_top1_},
            {"best_top1", best_top1_},
            {"train_seconds", train_seconds_},
            {"train_images", train_images_},
            {"wall_seconds", wall_seconds_before_ + seconds_since(start_)},
            {"epoch_loss_sum", epoch_loss_sum_},
            {"log_bytes", log.bytes},
            {"log_seconds", log.seconds},
            {"identity", s_.identity()}};
  }

  // Loads the checkpoint and its progress; returns where the log stood when
  // it was saved, for the log to continue from there.
  LogPosition restore() {
    const std::string state_file = train_state_file(resume_from_);
    // The settings before the weights: a changed architecture is named as
    // such, not as tensors that do not fit.
    const SavedProgress saved(read_train_progress(state_file), state_file);
    check_same_identity(saved.object("identity"), s_.identity(), resume_from_);
    load_checkpoint_into(resume_from_, *model_, *optimizer_);  // (returns the same progress again)
    const int64_t saved_steps_per_epoch = saved.count("steps_per_epoch", std::numeric_limits<int64_t>::max());
    check(saved_steps_per_epoch == steps_per_epoch_,
          "cannot resume from {}: it has {} steps per epoch, this training set gives {} (different data?)",
          resume_from_, saved_steps_per_epoch, steps_per_epoch_);
    step_ = saved.count("step", total_steps());
    last_top1_ = saved.accuracy("last_top1");
    best_top1_ = saved.accuracy("best_top1");
    train_seconds_ = saved.seconds("train_seconds");
    train_images_ = saved.count("train_images", std::numeric_limits<int64_t>::max());
    wall_seconds_before_ = saved.seconds("wall_seconds");
    epoch_loss_sum_ = saved.loss_sum("epoch_loss_sum");
    return {saved.count("log_bytes", std::numeric_limits<int64_t>::max()), saved.seconds("log_seconds")};
  }

  // The checkpoint's line is logged first so that the log length saved with
  // it includes the line: a resume keeps it and cuts off only what a crashed
  // run logged after it (or, if this save never completes, the line too).
  void save_checkpoint_now() {
    const std::string dir = (fs::path(s_.out_dir) / kCheckpointFolder).string();
    log_->write({{"phase", "checkpoint"}, {"step", step_}, {"dir", dir}});
    save_checkpoint(dir, *model_, *optimizer_, progress());
  }

  // ------------------------------------------------------------ training

  // One optimizer step; returns the batch's loss. The drop-path masks depend
  // only on (seed, step), so a resumed run draws the same ones.
  double train_step(const data::Batch& batch) {
    Tensor images = Tensor::from_vector(batch.images, {batch.n, batch.c, batch.h, batch.w}).to(s_.device);
    Tensor labels = Tensor::from_vector(batch.labels, {batch.n}).to(s_.device);
    Rng rng(data::mix_seed(data::mix_seed(s_.seed, kDropPathStream), static_cast<uint64_t>(step_)));
    ForwardContext ctx;
    ctx.training = true;
    ctx.rng = &rng;
    Tensor loss = cross_entropy(model_->forward(images, ctx), labels, s_.label_smoothing);
    optimizer_->zero_grad();
    loss.backward();
    if (s_.clip_grad_norm > 0) clip_grad_norm(params_, s_.clip_grad_norm);
    optimizer_->set_lr(schedule_.lr_at(step_));
    optimizer_->step();
    ++step_;
    ++steps_this_run_;
    return loss.item<double>();
  }

  bool stop_requested() const {
    return (s_.stop_after_steps > 0 && steps_this_run_ >= s_.stop_after_steps) ||
           (s_.time_limit_minutes > 0 && seconds_since(start_) >= 60 * s_.time_limit_minutes);
  }

  // Trains the rest of `epoch`; false when stopped before its last batch
  // (after saving a checkpoint).
  bool train_epoch(int64_t epoch) {
    const int64_t first_batch = step_ % steps_per_epoch_;
    loader_.start_epoch(epoch, static_cast<size_t>(first_batch));
    ProgressBar bar(fmt::format("epoch {}/{}", epoch + 1, s_.epochs),
                    (steps_per_epoch_ - first_batch) * s_.batch_size);
    int64_t steps = 0;  // in this invocation
    bool stopped = false;
    for (data::Batch batch; !stopped && loader_.next(batch);) {
      const double lr = schedule_.lr_at(step_);
      const double loss = train_step(batch);
      epoch_loss_sum_ += loss;
      ++steps;
      bar.update(batch.n, fmt::format("loss {:.4f} lr {:.2e}", loss, lr));
      if (step_ % s_.log_every_steps == 0) {
        log_->write({{"phase", "train"}, {"epoch", epoch + 1}, {"step", step_}, {"lr", lr}, {"loss", loss}});
      }
      stopped = step_ % steps_per_epoch_ != 0 && stop_requested();
    }
    record_epoch(epoch, bar, steps * s_.batch_size, !stopped);
    if (stopped) {
      save_checkpoint_now();
    } else {
      epoch_loss_sum_ = 0;  // the next epoch's sum starts here
    }
    return !stopped;
  }

  // The epoch's mean loss over its steps so far, earlier invocations' too (so
  // a resumed epoch logs what an uninterrupted one does), and the speed of
  // this invocation's `images`.
  void record_epoch(int64_t epoch, ProgressBar& bar, int64_t images, bool complete) {
    const double mean_loss = epoch_loss_sum_ / std::max<int64_t>(step_ - epoch * steps_per_epoch_, 1);
    bar.finish(fmt::format("loss {:.4f}", mean_loss));
    train_seconds_ += bar.elapsed_seconds();
    train_images_ += images;
    log_->write({{"phase", "epoch"}, {"epoch", epoch + 1}, {"step", step_}, {"train_loss", mean_loss},
                 {"images_per_second", per_second(images, bar.elapsed_seconds())}, {"complete", complete}});
  }

  // Evaluation and checkpoint when due; false when this invocation should stop.
  bool finish_epoch(int64_t epoch) {
    const bool last = epoch + 1 == s_.epochs;
    if (last || (epoch + 1) % s_.eval_every_epochs == 0) evaluate(epoch);
    const bool stop = !last && stop_requested();
    if (last || stop || (epoch + 1) % s_.checkpoint_every_epochs == 0) save_checkpoint_now();
    return !stop;
  }

  void evaluate(int64_t epoch) {
    EvalOptions options;
    options.batch_size = s_.eval_batch_size;
    options.num_workers = s_.workers;
    options.device = s_.device;
    const EvalResult result = evaluate_classifier([&](const Tensor& x) { return model_->forward(x); },
                                                  test_.dataset(), model_->config.preprocess, options);
    last_top1_ = result.top1;
    best_top1_ = best_top1_.is_null() ? result.top1 : std::max(best_top1_.get<double>(), result.top1);
    log_->write({{"phase", "eval"}, {"epoch", epoch + 1}, {"step", step_}, {"top1", result.top1},
                 {"top5", result.top5}, {"images", result.images}});
  }

  json write_results(bool finished) {
    const json results = {{"finished", finished},
                          {"epochs", s_.epochs},
                          {"epochs_done", static_cast<double>(step_) / steps_per_epoch_},
                          {"steps", step_},
                          {"final_top1", finished ? last_top1_ : json()},
                          {"last_top1", last_top1_},
                          {"best_top1", best_top1_},
                          {"images_per_second", per_second(train_images_, train_seconds_)},
                          {"train_seconds", train_seconds_},
                          {"wall_seconds", wall_seconds_before_ + seconds_since(start_)},
                          {"parameters", model_->num_parameters()},
                          {"device", s_.device.str()},
                          {"precision", s_.precision},
                          {"checkpoint", (fs::path(s_.out_dir) / kCheckpointFolder).string()}};
    write_json_atomic((fs::path(s_.out_dir) / "results.json").string(), results);
    return results;
  }

  const PretrainSettings& s_;
  const std::chrono::steady_clock::time_point start_;
  const Split train_, test_;  // opened before prepare_run_folder, so a bad data path deletes nothing
  std::unique_ptr<VisionTransformer> model_;
  std::vector<Tensor> params_;
  std::unique_ptr<Optimizer> optimizer_;
  const int64_t steps_per_epoch_;
  const WarmupCosineSchedule schedule_;
  data::DataLoader loader_;
  // Last: an old run is replaced only once everything above (the data, the
  // model, the batch size) has been checked.
  const std::string resume_from_;
  std::optional<MetricsLog> log_;  // opened once a resume has read where it stood
  // Progress, saved in every checkpoint.
  int64_t step_ = 0;
  json last_top1_, best_top1_;  // null until the first evaluation
  double train_seconds_ = 0;
  int64_t train_images_ = 0;
  double wall_seconds_before_ = 0;  // spent by earlier invocations of a resumed run
  double epoch_loss_sum_ = 0;       // over the current epoch's steps so far
  int64_t steps_this_run_ = 0;
};

}  // namespace

json run_pretrain(const PretrainSettings& settings) {
  const GemmPrecisionGuard gemm_precision(parse_gemm_precision(settings.precision, settings.device));
  return Pretrainer(settings).run();
}

}  // namespace engine

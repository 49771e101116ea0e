// ./pretrain: trains a ViT from scratch on an ImageFolder (timm's CIFAR recipe
// by default): AdamW over decay groups, per-step linear warmup then cosine
// decay, label smoothing, reflect-pad random crop + flip, drop-path, global
// gradient-norm clipping; periodic evaluation on the test split, a JSONL log,
// atomic checkpoints (train/checkpoint.h) and bit-exact resume.
//
// Everything random is a function of (seed, position): the weights of (seed),
// the sample order and augmentation of epoch e of (seed, e) (data/loader.h),
// the drop-path masks of step t of (seed, t). A checkpoint therefore needs only
// the step count besides the weights and the optimizer, and a run resumed from
// step t computes exactly what the uninterrupted run computes.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "engine/device.h"
#include "models/vit.h"

namespace engine {

struct PretrainSettings {
  // [model]: a preset, then any explicit keys on top; num_classes and the
  // label names come from the training folder.
  VitConfig model;
  // [data]
  std::string data;  // dataset folder or archive: ImageFolder or CIFAR-10 binary (data/open_dataset.h)
  std::string train_subdir, test_subdir;
  int64_t train_limit = 0;  // > 0: that many images, evenly spaced (every class of a sorted folder)
  int64_t test_limit = 0;
  int crop_padding = 4;     // reflect padding of the random crop; 0: no crop
  int workers = 2;
  // [train]
  int64_t epochs = 100;
  int64_t batch_size = 512;
  double lr = 1e-3;
  double min_lr = 1e-5;
  double warmup_lr = 1e-5;
  int64_t warmup_epochs = 5;
  double weight_decay = 0.05;
  double beta1 = 0.9, beta2 = 0.999;
  double label_smoothing = 0.1;
  double clip_grad_norm = 1.0;  // 0: no clipping
  uint64_t seed = 0;
  // [eval]
  int64_t eval_every_epochs = 5;  // and always after the last epoch
  int64_t eval_batch_size = 500;
  // [run]
  Device device = Device::cpu();
  std::string precision = "fp32";  // fp32 | bf16
  double time_limit_minutes = 0;   // > 0: checkpoint and stop once training has run this long
  int64_t stop_after_steps = 0;    // > 0: checkpoint and stop after this many steps in this invocation
  int64_t log_every_steps = 20;
  // [output]
  std::string out_dir = "runs/pretrain";
  int64_t checkpoint_every_epochs = 10;  // and always at the end
  bool overwrite = false;  // replace an existing run's outputs
  bool resume = false;     // continue from OUT/checkpoint (a fresh start when there is none)

  // Reads every key; errors name the file, key and value. Unknown keys are
  // reported by Config::check_all_used.
  static PretrainSettings from_config(const Config& config);

  // The settings a resumed run must share with the checkpoint (everything that
  // changes the numbers; not the device, workers, limits on this invocation,
  // evaluation or output cadence, nor where the data lives), as
  // "section.key" -> value; the architecture as "model.<timm model_args key>".
  nlohmann::json identity() const;
};

// Trains (or resumes), evaluating and checkpointing on the way, and writes
// OUT/metrics.jsonl, OUT/checkpoint/ and OUT/results.json: final and best
// top-1, train images/s, wall time, epochs, and "finished" (false when
// time_limit_minutes or stop_after_steps cut the run short: run again with
// resume = true to continue). A resume cuts the log back to its length at the
// checkpoint (dropping what a crashed run logged after it; a log shorter than
// that is an error) and appends to it, and its "time" carries on, so the log
// reads as the uninterrupted run's would.
nlohmann::json run_pretrain(const PretrainSettings& settings);

}  // namespace engine

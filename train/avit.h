// ./train_avit: fine-tunes a pretrained ViT into an A-ViT (models/avit.h) that
// halts tokens, towards a target depth.
//
// Loss per batch (masked path, all tokens in the tensors):
//   CE(logits, labels) + kl_weight * T^2 KL(teacher || student at temperature T)
//   + alpha_p * ponder + alpha_d * KL(Gaussian depth prior || halting distribution)
// (layers/halting.h defines ponder and the distribution), AdamW over every
// parameter with warmup + cosine. The teacher is the starting checkpoint.
// Then: top-1 and per-layer token retention of the A-ViT with tokens really
// dropped (compacted path) against the teacher (its mean retention too: below
// 1 when the teacher is itself an A-ViT), latency of both at each
// latency batch (median of repeats, real test images spread over the set) with
// the A-ViT's mean retention in each timed batch, halting-depth maps of test
// images spread over the set (OUT/depth_map_img<k>.png: the image next to N_k
// per patch), OUT/results.json,
// OUT/metrics.jsonl and the checkpoint OUT/avit/ (timm names; config.json
// carries engine.halting).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "layers/halting.h"
#include "train/batch_stream.h"

namespace engine {

struct AvitSettings : DataSettings {
  std::string teacher, teacher_config;
  // halting and its losses
  HaltingConfig halting;
  double alpha_p = 5e-4;       // ponder weight
  double alpha_d = 0.1;        // depth-prior weight
  double target_depth = 8.0;   // centre of the Gaussian prior, in layers (1..depth)
  double prior_std = 1.0;
  // optimisation
  int64_t budget_images = 2048;  // whole batches (from_config checks a value set, rounds this default)
  double lr = 1e-4;
  double weight_decay = 0.05;
  double warmup_fraction = 0.05;
  double kl_weight = 1.0;      // distillation from the dense teacher's logits (0: off)
  double temperature = 2.0;
  uint64_t seed = 0;
  // evaluation and outputs
  int64_t latency_repeats = 5;
  std::vector<int64_t> latency_batches = {1, 256};
  int64_t depth_maps = 4;
  std::string out_dir = "runs/avit";
  bool overwrite = false;

  static AvitSettings from_config(const Config& config);  // errors name the key
};

nlohmann::json run_avit(const AvitSettings& settings);

}  // namespace engine

// ./train_distill: plug-and-play, layer-wise replacement of attention by
// sequential token mixers.
//
// 1. Load the teacher. 2. Choose layers (explicit, or the sparsest by k90,
// measured on the fly over training images). 3. Distil: every chosen layer i
// gets a student mixer S_i trained so that S_i(LN1_i(x_i)) ≈ Attn_i(LN1_i(x_i))
// on the teacher's own block inputs (teacher frozen; one teacher forward per
// batch feeds every chosen layer; loss = MSE / Var(target) [+ cosine term]),
// under a fixed image budget. 4. Splice the students into a copy of the
// teacher: the hybrid. 5. Optionally fine-tune the hybrid end to end (CE +
// temperature-scaled KL to the teacher's logits). 6. Evaluate teacher and
// hybrid: top-1, parameters, GEMM FLOPs, latency at batch 1 and 256 (on a
// GPU also replayed as a CUDA graph: graph_latency_ms_bN, the GPU's time).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "layers/mixers/factory.h"
#include "models/vit.h"
#include "train/batch_stream.h"

namespace engine {

struct DistillSettings : DataSettings {
  // teacher
  std::string teacher;          // checkpoint path
  std::string teacher_config;   // optional explicit config.json
  // layers
  std::string layers = "sparsest:4";
  int64_t sparsity_images = 256;
  // students: a mixer spec, kind[:key=value,...] (layers/mixers/factory.h)
  std::string mixer = "gated_rnn";
  int64_t budget_images = 20480;  // whole batches (from_config checks a value set, rounds this default): budget / batch_size steps
  double lr = 1e-3;
  double weight_decay = 0.01;
  double cosine_weight = 0.0;
  double warmup_fraction = 0.05;
  // A run's seed sets its students' init and batch order (the fine-tune's
  // stream is keyed apart from it). groupwise and teacher_sparsity_sweep repeat every run (group,
  // teacher) once per seed and report the mean, the spread and each seed's
  // result; single takes one. Config: [distill] seed = N or seeds = N, M, ...
  std::vector<uint64_t> seeds = {0};
  // end-to-end fine-tune of the hybrid (0 images: off)
  int64_t finetune_images = 0;  // a whole number of batches, as budget_images
  double finetune_lr = 1e-4;
  double temperature = 2.0;
  double kl_weight = 1.0;
  std::string finetune_params = "students";  // students | all
  // evaluation
  int64_t latency_repeats = 5;
  std::vector<int64_t> latency_batches = {1, 256};
  // experiment
  std::string experiment = "single";  // single | groupwise | teacher_sparsity_sweep
  std::string groups = "each";
  std::string teachers;  // teacher_sparsity_sweep: name:path;name:path;...
  std::string out_dir = "runs/distill";
  bool overwrite = false;
  // Where mixer, layers and groups were set (Config::where), for the errors of
  // checks that need the teacher's depth and width.
  std::string mixer_where, layers_where, groups_where;

  // Reads every key (unknown keys are reported by Config::check_all_used).
  static DistillSettings from_config(const Config& config);
};

// Runs the whole pipeline and writes OUT/results.json, OUT/metrics.jsonl,
// OUT/hybrid/ (checkpoint) and, for groupwise, OUT/drop_vs_k90.svg (for the
// sweep, OUT/gap_vs_retention.svg).
nlohmann::json run_distill(const DistillSettings& settings);

// The distillation objective for one layer: MSE normalised by the target's
// variance, plus cosine_weight * (1 - mean cosine similarity over tokens).
// keep ([B, N] 0/1, optional): every mean (and the variance) is taken over the
// kept tokens only.
Tensor distill_loss(const Tensor& prediction, const Tensor& target, double cosine_weight,
                    const Tensor& keep = Tensor());

// A student's loss on one traced teacher block: the student reads the block's
// mixer input (LN1(x)) and is compared with its mixer output (distill_loss).
// With `active` ([B, N] 0/1, an A-ViT teacher's tokens entering the block)
// the halted tokens are absent for the student (avit_mix, as on the hybrid's
// compacted path) and count in no mean of the loss.
Tensor student_loss(TokenMixer& student, const BlockTrace& block, double cosine_weight,
                    const Tensor& active = Tensor());

}  // namespace engine

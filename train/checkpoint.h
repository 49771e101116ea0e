// Training checkpoints that a run can resume from, bit for bit.
//
// A checkpoint is a folder: model.safetensors (timm names) + config.json, as
// save_vit writes them (so timm, ./eval_imagenet and load_vit read it as any
// model), and train_state.safetensors: the optimizer's state (AdamW moments,
// "<param>.exp_avg" / "<param>.exp_avg_sq", and "step") with the run's
// position and bookkeeping as JSON under the "progress" metadata key.
//
// The folder is replaced as a whole, never file by file, so a crash while
// saving can never pair the model of one step with the optimizer of another.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/optim/optimizer.h"
#include "models/vit.h"

namespace engine {

// Calls write(staging) on an empty folder beside `dir` (dir + ".partial"),
// then swaps it in: dir -> dir + ".previous", staging -> dir, and deletes
// ".previous". If write throws, or the process dies at any point, the last
// complete version survives in `dir` or, between the two renames, in
// dir + ".previous" (find_complete_directory looks there).
void write_directory_atomically(const std::string& dir, const std::function<void(const std::string& staging)>& write);

// The names that write_directory_atomically(folder + "/" + name) can leave in
// folder: name and its staging siblings (the outputs a run lists for
// prepare_out_dir).
std::vector<std::string> atomic_directory_names(const std::string& name);

// The last complete version that write_directory_atomically left: `dir`, else
// dir + ".previous", else "" when there is none.
std::string find_complete_directory(const std::string& dir);

// train_state.safetensors on its own (save_checkpoint writes it with the model).
void save_train_state(const std::string& path, const Optimizer& optimizer, const nlohmann::json& progress);

// The progress JSON object in train state file `path`, read without restoring
// anything (to check a checkpoint's settings before loading it). Errors name the file.
nlohmann::json read_train_progress(const std::string& path);

// Restores the optimizer from `path` (Optimizer::load_state validates names and
// shapes) and returns the progress JSON object (its fields are the caller's to
// check). Errors name the file.
nlohmann::json load_train_state(const std::string& path, Optimizer& optimizer);

// The train_state.safetensors in checkpoint folder `dir`.
std::string train_state_file(const std::string& dir);

// Writes model + config.json + train_state.safetensors into `dir`, atomically.
void save_checkpoint(const std::string& dir, VisionTransformer& model, const Optimizer& optimizer,
                     const nlohmann::json& progress);

// Loads a checkpoint folder written by save_checkpoint into an existing model
// (whose architecture must match) and optimizer over its parameters; returns
// the progress JSON.
nlohmann::json load_checkpoint_into(const std::string& dir, VisionTransformer& model, Optimizer& optimizer);

}  // namespace engine

// Loading and saving ViTs: checkpoint name maps (timm, DeiT, Hugging Face
// classic and 5.x), architecture resolution and strict parameter loading.
//
// The architecture comes from, in order: an explicit config file; config.json
// beside the checkpoint (timm model_args/pretrained_cfg, or a HF ViTConfig);
// the safetensors __metadata__ when it holds model_args keys; else it is
// inferred from tensor shapes (the head count then defaults to embed_dim / 64,
// the ViT convention), with a note on stderr.
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "models/vit.h"

namespace engine {

struct VitLoadOptions {
  std::string config_path;  // explicit config.json (timm or HF); empty: look beside the checkpoint
  int64_t img_size = 0;     // > 0: run at this resolution (position embeddings resampled)
};

// Checkpoint tensors renamed to timm names (HF q/k/v fused into qkv). Errors
// list tensors that fit no known naming scheme.
NamedTensors to_timm_names(const NamedTensors& tensors, const std::string& source);

// Errors name the config's source: a bad value, or a size (depth, embed_dim,
// num_classes, ...) other than the tensors' shapes give.
VitConfig resolve_vit_config(const Checkpoint& checkpoint, const NamedTensors& timm_tensors,
                             const VitLoadOptions& options);

// timm's position-embedding resampling: bicubic (A = -0.75, align_corners
// false) over the patch grid; prefix-token rows are kept as they are.
Tensor resample_pos_embed(const Tensor& pos_embed, int64_t prefix_tokens, int64_t new_grid);

std::unique_ptr<VisionTransformer> load_vit(const std::string& path, const VitLoadOptions& options = {});

// Copies `tensors` into the model's parameters by name (converted to float32),
// failing with one error that lists every missing, unexpected or mis-shaped name.
void load_parameters(VisionTransformer& model, const NamedTensors& tensors, const std::string& source);

// timm-style config.json contents for a model (model_args, pretrained_cfg, and
// the per-block mixer kinds under "engine").
nlohmann::json vit_config_json(const VitConfig& config);

// Writes DIR/model.safetensors (timm names) and DIR/config.json, each atomically.
void save_vit(VisionTransformer& model, const std::string& directory);

}  // namespace engine

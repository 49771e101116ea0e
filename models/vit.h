// Vision Transformer (timm's VisionTransformer semantics): patch embedding,
// optional class and DeiT distillation tokens, learned position embeddings,
// pre-norm blocks, final norm, pooling (class token or average + fc_norm), head.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "layers/block.h"
#include "layers/halting.h"
#include "layers/linear.h"
#include "layers/mixers/factory.h"
#include "layers/patch_embed.h"

namespace engine {

// How images are prepared for the model (timm's pretrained_cfg).
struct Preprocess {
  int64_t input_size = 224;
  double crop_pct = 0.875;
  std::string interpolation = "bicubic";  // bicubic | bilinear
  double mean[3] = {0.485, 0.456, 0.406};
  double std[3] = {0.229, 0.224, 0.225};

  void validate(const std::string& source) const;  // errors name `source` and the bad key
};

struct VitConfig {
  int64_t img_size = 224;
  int64_t patch_size = 16;
  int64_t in_chans = 3;
  int64_t embed_dim = 768;
  int64_t depth = 12;
  int64_t num_heads = 12;
  int64_t mlp_hidden = 3072;
  int64_t num_classes = 1000;
  bool qkv_bias = true;
  bool class_token = true;
  bool distilled = false;        // DeiT: an extra distillation token and head
  bool no_embed_class = false;   // pos_embed covers patches only (prefix tokens get none)
  std::string global_pool = "token";  // token | avg
  bool fc_norm = false;          // LayerNorm after average pooling (norm is then identity)
  double ln_eps = 1e-6;
  double drop_path_rate = 0.0;
  // One entry per block: the token mixer spec (layers/mixers/factory.h), e.g.
  // "attention" for a plain ViT block or "gated_rnn:width=96" in a hybrid.
  // Empty: attention in every block (the constructor fills it in).
  std::vector<std::string> mixers;
  std::vector<std::string> label_names;
  Preprocess preprocess;
  // Set for an A-ViT (models/avit.h): the model halts tokens. Saved in
  // config.json under "engine": {"halting": {...}}; needs class-token pooling.
  std::optional<HaltingConfig> halting;

  int64_t grid() const { return img_size / patch_size; }
  int64_t num_patches() const { return grid() * grid(); }
  int64_t num_prefix_tokens() const { return (class_token ? 1 : 0) + (distilled ? 1 : 0); }
  int64_t num_tokens() const { return num_patches() + num_prefix_tokens(); }
  // True for a batch of images the model takes: [B, in_chans, img_size, img_size].
  bool takes_images(const Shape& shape) const {
    return shape.size() == 4 && shape[1] == in_chans && shape[2] == img_size && shape[3] == img_size;
  }
  // A block's mixer spec read with this model's heads and qkv_bias as the
  // defaults (what building and loading a block use).
  MixerSpec mixer_spec(const std::string& text) const;
  // Errors name `source` (the config file, for a loaded model) and the bad field.
  void validate(const std::string& source = "model config") const;
};

// Named architectures (timm's names): vit_tiny_patch16_224, vit_small_patch16_224,
// vit_base_patch16_224, deit_small_distilled_patch16_224, vit_cifar_tiny_patch4_32.
// An unknown name is an error listing the known ones.
VitConfig vit_preset(const std::string& name);
std::vector<std::string> vit_preset_names();

// What forward() exposes on request: one trace per block.
struct ForwardTrace {
  bool want_probs = false;
  // >= 0: forward_tokens stops after this block and returns its output (the
  // final norm is skipped): distillation needs no teacher compute past the
  // deepest replaced layer.
  int64_t last_block = -1;
  std::vector<BlockTrace> blocks;

  void start(size_t num_blocks);  // one empty BlockTrace per block, each with want_probs
};

class VisionTransformer {
 public:
  // A randomly initialised model (timm-like init) from a config.
  VisionTransformer(const VitConfig& config, uint64_t seed = 0);

  // images [B, C, H, W] normalised -> logits [B, classes].
  Tensor forward(const Tensor& images, const ForwardContext& ctx = {}, ForwardTrace* trace = nullptr);
  // Patch embedding + prefix tokens + position embeddings: the first block's input [B, N, D].
  Tensor embed(const Tensor& images);
  // Tokens after the final norm, [B, N, D].
  Tensor forward_tokens(const Tensor& images, const ForwardContext& ctx, ForwardTrace* trace);
  Tensor final_norm(const Tensor& tokens);    // norm (identity when the model uses fc_norm)
  Tensor head_forward(const Tensor& tokens);  // pooling + head(s)

  void visit(const ParamVisitor& fn);  // timm names
  NamedTensors named_parameters();
  int64_t num_parameters();
  void to(Device device);  // moves every parameter
  Device device() const { return patch_embed.weight.device(); }

  VitConfig config;
  PatchEmbed patch_embed;
  Tensor cls_token, dist_token, pos_embed;
  std::vector<Block> blocks;
  LayerNorm norm, fc_norm;
  Linear head, head_dist;
};

}  // namespace engine

#include "models/vit.h"

#include <cmath>
#include <utility>

#include "engine/ops/ops.h"
#include "layers/mixers/factory.h"

namespace engine {

MixerSpec VitConfig::mixer_spec(const std::string& text) const {
  MixerSpec defaults;
  defaults.heads = num_heads;
  defaults.qkv_bias = qkv_bias;
  return parse_mixer_spec(text, defaults);
}

void Preprocess::validate(const std::string& source) const {
  check(input_size > 0, "{}: preprocessing input_size {} must be positive", source, input_size);
  // At most 1: a larger crop_pct resizes the image below the crop, which timm
  // pads but the engine's center crop refuses.
  check(std::isfinite(crop_pct) && crop_pct > 0 && crop_pct <= 1,
        "{}: preprocessing crop_pct {} must be in (0, 1]", source, crop_pct);
  check(interpolation == "bilinear" || interpolation == "bicubic",
        "{}: preprocessing interpolation '{}' is not supported (bilinear or bicubic)", source, interpolation);
  for (int channel = 0; channel < 3; ++channel) {
    check(std::isfinite(mean[channel]), "{}: preprocessing mean [{}] = {} must be finite", source, channel,
          mean[channel]);
    check(std::isfinite(std[channel]) && std[channel] > 0,
          "{}: preprocessing std [{}] = {} must be finite and positive", source, channel, std[channel]);
  }
}

namespace {

// Parses every block's mixer spec, so that a bad one fails here, naming the
// config and the block, rather than when the blocks are built. Only attention
// blocks split embed_dim into heads (each may name its own count), so a model
// without any needs no num_heads that divides it.
void check_mixer_specs(const VitConfig& config, const std::string& source) {
  if (config.mixers.empty()) {
    check(config.embed_dim % config.num_heads == 0, "{}: embed_dim {} must be divisible by num_heads {}", source,
          config.embed_dim, config.num_heads);
  }
  for (size_t i = 0; i < config.mixers.size(); ++i) {
    MixerSpec spec;
    try {
      spec = config.mixer_spec(config.mixers[i]);
    } catch (const Error& e) {
      fail("{}: mixers[{}]: {}", source, i, e.what());
    }
    check(spec.kind != "attention" || (spec.heads > 0 && config.embed_dim % spec.heads == 0),
          "{}: mixers[{}] '{}': its heads ({}) must be positive and divide embed_dim {}", source, i,
          config.mixers[i], spec.heads, config.embed_dim);
  }
}

}  // namespace

void VitConfig::validate(const std::string& source) const {
  const std::pair<const char*, int64_t> sizes[] = {
      {"img_size", img_size}, {"patch_size", patch_size}, {"in_chans", in_chans},     {"embed_dim", embed_dim},
      {"depth", depth},       {"num_heads", num_heads},   {"mlp_hidden", mlp_hidden}, {"num_classes", num_classes},
  };
  for (const auto& [key, value] : sizes) check(value > 0, "{}: {} {} must be positive", source, key, value);
  check(img_size % patch_size == 0, "{}: img_size {} must be a multiple of patch_size {}", source, img_size,
        patch_size);
  check(global_pool == "token" || global_pool == "avg", "{}: global_pool '{}' (expected token or avg)", source,
        global_pool);
  check(global_pool != "token" || class_token, "{}: global_pool = token needs a class token", source);
  // As timm's VisionTransformerDistilled: the distillation head reads the distillation token.
  check(!distilled || global_pool == "token",
        "{}: distilled (DeiT's distillation head) needs global_pool = token, got '{}'", source, global_pool);
  check(std::isfinite(ln_eps) && ln_eps >= 0, "{}: ln_eps {} must be finite and non-negative", source, ln_eps);
  // The last block drops its branches at the full rate.
  check(drop_path_rate >= 0 && drop_path_rate < 1, "{}: drop_path_rate {} must be in [0, 1)", source,
        drop_path_rate);
  check(mixers.empty() || static_cast<int64_t>(mixers.size()) == depth, "{}: {} mixer kinds listed for {} blocks",
        source, mixers.size(), depth);
  check_mixer_specs(*this, source);
  check(label_names.empty() || static_cast<int64_t>(label_names.size()) == num_classes,
        "{}: {} label_names for {} classes", source, label_names.size(), num_classes);
  preprocess.validate(source);
  if (halting) {
    halting->validate(source);
    check(global_pool == "token", "{}: halting (A-ViT) needs global_pool = token, got '{}'", source, global_pool);
  }
}

namespace {

VitConfig imagenet_vit(int64_t dim, int64_t heads) {
  VitConfig c;  // defaults: 224 px, patch 16, depth 12, ImageNet mean/std, crop 0.875 bicubic
  c.embed_dim = dim;
  c.num_heads = heads;
  c.mlp_hidden = 4 * dim;
  return c;
}

const std::vector<std::pair<std::string, VitConfig>>& presets() {
  static const std::vector<std::pair<std::string, VitConfig>> table = [] {
    VitConfig deit = imagenet_vit(384, 6);
    deit.distilled = true;
    VitConfig cifar = imagenet_vit(192, 3);
    cifar.img_size = 32;
    cifar.patch_size = 4;
    cifar.num_classes = 10;
    cifar.preprocess = {32, 1.0, "bilinear", {0.4914, 0.4822, 0.4465}, {0.2470, 0.2435, 0.2616}};
    return std::vector<std::pair<std::string, VitConfig>>{{"vit_tiny_patch16_224", imagenet_vit(192, 3)},
                                                         {"vit_small_patch16_224", imagenet_vit(384, 6)},
                                                         {"vit_base_patch16_224", imagenet_vit(768, 12)},
                                                         {"deit_small_distilled_patch16_224", deit},
                                                         {"vit_cifar_tiny_patch4_32", cifar}};
  }();
  return table;
}

}  // namespace

std::vector<std::string> vit_preset_names() {
  std::vector<std::string> names;
  for (const auto& [name, config] : presets()) names.push_back(name);
  return names;
}

VitConfig vit_preset(const std::string& name) {
  for (const auto& [preset, config] : presets()) {
    if (preset == name) return config;
  }
  fail("unknown model preset '{}' (known: {})", name, fmt::join(vit_preset_names(), ", "));
}

VisionTransformer::VisionTransformer(const VitConfig& cfg, uint64_t seed) : config(cfg) {
  config.validate();
  if (config.mixers.empty()) config.mixers.assign(config.depth, "attention");
  Rng rng(seed);
  const int64_t dim = config.embed_dim;
  patch_embed = PatchEmbed(config.in_chans, dim, config.patch_size, rng);
  if (config.class_token) cls_token = Tensor::randn({1, 1, dim}, rng, DType::F32, 1e-6);
  if (config.distilled) dist_token = trunc_normal({1, 1, dim}, rng, 0.02);
  const int64_t pos_tokens = config.no_embed_class ? config.num_patches() : config.num_tokens();
  pos_embed = trunc_normal({1, pos_tokens, dim}, rng, 0.02);
  blocks.resize(config.depth);
  for (int64_t i = 0; i < config.depth; ++i) {
    Block& block = blocks[i];
    block.norm1 = LayerNorm(dim, config.ln_eps);
    block.mixer = make_mixer(config.mixer_spec(config.mixers[i]), dim, rng);
    block.norm2 = LayerNorm(dim, config.ln_eps);
    block.mlp = Mlp(dim, config.mlp_hidden, rng);
    // Stochastic depth grows linearly with depth, as in timm.
    block.drop_path_rate = config.depth > 1 ? config.drop_path_rate * i / (config.depth - 1) : 0.0;
  }
  if (config.fc_norm) fc_norm = LayerNorm(dim, config.ln_eps);
  else norm = LayerNorm(dim, config.ln_eps);
  head = Linear(dim, config.num_classes, true, rng);
  if (config.distilled) head_dist = Linear(dim, config.num_classes, true, rng);
}

Tensor VisionTransformer::embed(const Tensor& images) {
  check(config.takes_images(images.shape()), "model expects images [B, {}, {}, {}], got {}", config.in_chans,
        config.img_size, config.img_size, ShapeText{images.shape()});
  const int64_t batch = images.size(0), dim = config.embed_dim;
  Tensor x = patch_embed.forward(images);  // [B, Np, D]
  if (config.no_embed_class) x = add(x, pos_embed);
  std::vector<Tensor> parts;
  if (config.class_token) parts.push_back(expand(cls_token, {batch, 1, dim}));
  if (config.distilled) parts.push_back(expand(dist_token, {batch, 1, dim}));
  if (!parts.empty()) {
    parts.push_back(x);
    x = concat(parts, 1);
  }
  if (!config.no_embed_class) x = add(x, pos_embed);
  return x;
}

Tensor VisionTransformer::forward_tokens(const Tensor& images, const ForwardContext& ctx, ForwardTrace* trace) {
  Tensor x = embed(images);
  if (trace) trace->start(blocks.size());
  for (size_t i = 0; i < blocks.size(); ++i) {
    x = blocks[i].forward(x, ctx, trace ? &trace->blocks[i] : nullptr);
    if (trace && trace->last_block == static_cast<int64_t>(i)) return x;
  }
  return final_norm(x);
}

Tensor VisionTransformer::final_norm(const Tensor& tokens) { return norm.defined() ? norm.forward(tokens) : tokens; }

void ForwardTrace::start(size_t num_blocks) {
  blocks.assign(num_blocks, BlockTrace{});
  for (BlockTrace& b : blocks) b.want_probs = want_probs;
}

Tensor VisionTransformer::head_forward(const Tensor& tokens) {
  if (config.global_pool == "avg") {
    const int64_t prefix = config.num_prefix_tokens();
    Tensor pooled = mean(narrow(tokens, 1, prefix, tokens.size(1) - prefix), {1});
    return head.forward(fc_norm.defined() ? fc_norm.forward(pooled) : pooled);
  }
  Tensor logits = head.forward(select(tokens, 1, 0));
  if (!config.distilled) return logits;
  // DeiT inference: the mean of the class-token and distillation-token heads.
  return mul(add(logits, head_dist.forward(select(tokens, 1, 1))), 0.5);
}

Tensor VisionTransformer::forward(const Tensor& images, const ForwardContext& ctx, ForwardTrace* trace) {
  return head_forward(forward_tokens(images, ctx, trace));
}

void VisionTransformer::visit(const ParamVisitor& fn) {
  if (cls_token.defined()) fn("cls_token", cls_token);
  if (dist_token.defined()) fn("dist_token", dist_token);
  fn("pos_embed", pos_embed);
  patch_embed.visit("patch_embed", fn);
  for (size_t i = 0; i < blocks.size(); ++i) blocks[i].visit(fmt::format("blocks.{}", i), fn);
  if (norm.defined()) norm.visit("norm", fn);
  if (fc_norm.defined()) fc_norm.visit("fc_norm", fn);
  head.visit("head", fn);
  if (head_dist.weight.defined()) head_dist.visit("head_dist", fn);
}

NamedTensors VisionTransformer::named_parameters() {
  NamedTensors params;
  visit([&](const std::string& name, Tensor& p) {
    if (p.name().empty()) p.set_name(name);
    params.emplace_back(name, p);
  });
  return params;
}

int64_t VisionTransformer::num_parameters() {
  int64_t total = 0;
  visit([&](const std::string&, Tensor& p) { total += p.numel(); });
  return total;
}

void VisionTransformer::to(Device device) { move_parameters([&](const ParamVisitor& fn) { visit(fn); }, device); }

}  // namespace engine

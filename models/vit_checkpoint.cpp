#include "models/vit_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <type_traits>

#include "engine/autograd.h"
#include "engine/ops/copy/copy.h"
#include "engine/ops/index/index.h"

namespace engine {

namespace fs = std::filesystem;
using nlohmann::json;

// ------------------------------------------------------------------ name maps

namespace {

// One rename rule: a regex over the checkpoint name and its timm replacement.
struct Rule {
  std::regex pattern;
  std::string replacement;
};

// Hugging Face ViT / DeiT (classic names and transformers 5.x names) -> timm.
// q/k/v map to temporary "attn.q|k|v" names, fused afterwards.
const std::vector<Rule>& hf_rules() {
  static const std::vector<Rule> rules = [] {
    const std::vector<std::pair<std::string, std::string>> table = {
        {R"((?:vit|deit)\.embeddings\.cls_token)", "cls_token"},
        {R"((?:vit|deit)\.embeddings\.distillation_token)", "dist_token"},
        {R"((?:vit|deit)\.embeddings\.position_embeddings)", "pos_embed"},
        {R"((?:vit|deit)\.embeddings\.patch_embeddings\.projection\.(weight|bias))", "patch_embed.proj.$1"},
        {R"((?:vit|deit)\.layernorm\.(weight|bias))", "norm.$1"},
        {R"((?:classifier|cls_classifier)\.(weight|bias))", "head.$1"},
        {R"(distillation_classifier\.(weight|bias))", "head_dist.$1"},
        // classic: vit.encoder.layer.N.*   5.x: vit.layers.N.*
        {R"((?:vit|deit)\.(?:encoder\.layer|layers)\.(\d+)\.layernorm_before\.(weight|bias))", "blocks.$1.norm1.$2"},
        {R"((?:vit|deit)\.(?:encoder\.layer|layers)\.(\d+)\.layernorm_after\.(weight|bias))", "blocks.$1.norm2.$2"},
        {R"((?:vit|deit)\.(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:attention\.query|q_proj)\.(weight|bias))",
         "blocks.$1.attn.q.$2"},
        {R"((?:vit|deit)\.(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:attention\.key|k_proj)\.(weight|bias))",
         "blocks.$1.attn.k.$2"},
        {R"((?:vit|deit)\.(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:attention\.value|v_proj)\.(weight|bias))",
         "blocks.$1.attn.v.$2"},
        {R"((?:vit|deit)\.(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:output\.dense|o_proj)\.(weight|bias))",
         "blocks.$1.attn.proj.$2"},
        {R"((?:vit|deit)\.(?:encoder\.layer|layers)\.(\d+)\.(?:intermediate\.dense|mlp\.fc1)\.(weight|bias))",
         "blocks.$1.mlp.fc1.$2"},
        {R"((?:vit|deit)\.(?:encoder\.layer|layers)\.(\d+)\.(?:output\.dense|mlp\.fc2)\.(weight|bias))",
         "blocks.$1.mlp.fc2.$2"},
    };
    std::vector<Rule> compiled;
    for (const auto& [pattern, replacement] : table) compiled.push_back({std::regex(pattern), replacement});
    return compiled;
  }();
  return rules;
}

bool is_hf_checkpoint(const NamedTensors& tensors) {
  for (const auto& [name, t] : tensors) {
    if (name.rfind("vit.", 0) == 0 || name.rfind("deit.", 0) == 0) return true;
  }
  return false;
}

// HF keeps q, k, v apart; timm stores them stacked as one qkv projection.
void fuse_qkv(std::map<std::string, Tensor>& named, const std::string& source) {
  NoGradGuard no_grad;
  for (int64_t i = 0;; ++i) {
    const std::string prefix = fmt::format("blocks.{}.attn.", i);
    if (!named.count(prefix + "q.weight")) break;
    for (const char* kind : {"weight", "bias"}) {
      std::vector<Tensor> parts;
      std::vector<std::string> missing;
      for (const char* proj : {"q", "k", "v"}) {
        const std::string name = prefix + proj + "." + kind;
        auto found = named.find(name);
        if (found == named.end()) {
          missing.push_back(name);
          continue;
        }
        parts.push_back(found->second.to(DType::F32));
        named.erase(found);
      }
      if (parts.size() == 3) named[prefix + "qkv." + kind] = concat(parts, 0);
      else check(parts.empty(), "{}: block {} has only some of its q/k/v {}s; missing (timm names): {}", source, i,
                 kind, fmt::join(missing, ", "));
    }
  }
}

}  // namespace

NamedTensors to_timm_names(const NamedTensors& tensors, const std::string& source) {
  if (!is_hf_checkpoint(tensors)) return tensors;  // timm / DeiT names already
  std::map<std::string, Tensor> named;
  std::vector<std::string> unknown;
  for (const auto& [name, tensor] : tensors) {
    if (name.find(".pooler.") != std::string::npos) continue;  // unused by image classification
    bool matched = false;
    for (const Rule& rule : hf_rules()) {
      if (std::regex_match(name, rule.pattern)) {
        named[std::regex_replace(name, rule.pattern, rule.replacement)] = tensor;
        matched = true;
        break;
      }
    }
    if (!matched) unknown.push_back(name);
  }
  check(unknown.empty(), "{}: tensors that fit no known ViT naming scheme: {}", source, fmt::join(unknown, ", "));
  fuse_qkv(named, source);
  return NamedTensors(named.begin(), named.end());
}

// ------------------------------------------------------------------ config

namespace {

const Tensor* find_tensor(const NamedTensors& tensors, const std::string& name) {
  for (const auto& [n, t] : tensors) {
    if (n == name) return &t;
  }
  return nullptr;
}

// The side of a square grid of n > 0 patches; 0 when n patches form none.
int64_t grid_side(int64_t patches) {
  if (patches <= 0) return 0;
  const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(patches))));
  return side * side == patches ? side : 0;
}

// Architecture from tensor shapes alone.
VitConfig infer_config(const NamedTensors& t, const std::string& source) {
  auto need = [&](const std::string& name) -> const Tensor& {
    const Tensor* found = find_tensor(t, name);
    check(found != nullptr, "{}: cannot infer the ViT architecture: tensor '{}' is missing", source, name);
    return *found;
  };
  VitConfig c;
  const Tensor& proj = need("patch_embed.proj.weight");
  c.embed_dim = proj.size(0);
  c.in_chans = proj.size(1);
  c.patch_size = proj.size(2);
  c.depth = 0;
  while (find_tensor(t, fmt::format("blocks.{}.norm1.weight", c.depth))) ++c.depth;
  c.mlp_hidden = need("blocks.0.mlp.fc1.weight").size(0);
  c.num_classes = need("head.weight").size(0);
  c.qkv_bias = find_tensor(t, "blocks.0.attn.qkv.bias") != nullptr;
  c.class_token = find_tensor(t, "cls_token") != nullptr;
  c.distilled = find_tensor(t, "dist_token") != nullptr;
  c.num_heads = std::max<int64_t>(1, c.embed_dim / 64);
  c.fc_norm = find_tensor(t, "fc_norm.weight") != nullptr;
  c.global_pool = c.fc_norm || !c.class_token ? "avg" : "token";
  const int64_t pos_tokens = need("pos_embed").size(1);
  const int64_t prefix = c.num_prefix_tokens();
  c.no_embed_class = prefix > 0 && grid_side(pos_tokens) > 0 && grid_side(pos_tokens - prefix) == 0;
  const int64_t side = grid_side(c.no_embed_class ? pos_tokens : pos_tokens - prefix);
  check(side > 0, "{}: pos_embed has {} tokens, which is not a square patch grid (+{} prefix tokens)", source,
        pos_tokens, prefix);
  c.img_size = side * c.patch_size;
  c.preprocess.input_size = c.img_size;
  return c;
}

// j[key] as a T; a value of another type is an error naming the file and the key.
template <typename T>
T value_of(const json& j, const std::string& key, const std::string& source) {
  try {
    return j.at(key).get<T>();
  } catch (const json::exception& e) {
    fail("{}: config key '{}': {}", source, key, e.what());
  }
}

// value_of(j, key) when j holds key, else `fallback`.
template <typename T>
T value_or(const json& j, const std::string& key, const T& fallback, const std::string& source) {
  return j.contains(key) ? value_of<T>(j, key, source) : fallback;
}

// j[key], which must be a JSON object (a section such as model_args).
const json& object_at(const json& j, const char* key, const std::string& source) {
  const json& section = j.at(key);
  check(section.is_object(), "{}: config key '{}' must be a JSON object, got {}", source, key, section.dump());
  return section;
}

// j as an integer (T = int64_t) or a number (T = double): a JSON number, or a
// string holding exactly one, as safetensors __metadata__ values are strings.
// Anything else is an error naming the key.
template <typename T>
T as_number(const json& j, const char* key, const std::string& source) {
  constexpr bool integer = std::is_integral_v<T>;
  if (integer ? j.is_number_integer() : j.is_number()) return j.get<T>();
  const std::string text = j.is_string() ? j.get<std::string>() : "";
  size_t used = 0;
  T value{};
  try {
    if constexpr (integer) value = std::stoll(text, &used);
    else value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  check(!text.empty() && used == text.size(), "{}: config key '{}' is not {}: {}", source, key,
        integer ? "an integer" : "a number", j.dump());
  return value;
}

int64_t as_int(const json& j, const char* key, const std::string& source) {
  return as_number<int64_t>(j, key, source);
}

double as_double(const json& j, const char* key, const std::string& source) {
  return as_number<double>(j, key, source);
}

bool as_bool(const json& j, const char* key, const std::string& source) {
  if (j.is_boolean()) return j.get<bool>();
  check(j.is_string(), "{}: config key '{}' is not a boolean: {}", source, key, j.dump());
  const std::string s = j.get<std::string>();
  check(s == "True" || s == "False" || s == "true" || s == "false", "{}: config key '{}' is not a boolean: {}",
        source, key, s);
  return s == "True" || s == "true";
}

// The model_args keys apply_timm_args reads.
const std::set<std::string>& timm_arg_keys() {
  static const std::set<std::string> keys = {
      "img_size",  "patch_size", "in_chans",    "embed_dim",      "depth",       "num_heads", "num_classes",
      "mlp_ratio", "qkv_bias",   "class_token", "no_embed_class", "global_pool", "fc_norm"};
  return keys;
}

// Whether safetensors __metadata__ describes the architecture: torch and timm
// write {"format": "pt"} into every file, which says nothing about it.
bool holds_timm_args(const Metadata& metadata) {
  return std::any_of(metadata.begin(), metadata.end(),
                     [](const auto& entry) { return timm_arg_keys().count(entry.first) > 0; });
}

// timm model_args (also the flat string form in safetensors __metadata__).
void apply_timm_args(const json& args, VitConfig& c, const std::string& source) {
  auto has = [&](const char* key) { return args.contains(key) && !args[key].is_null(); };
  if (has("img_size")) {
    const json& v = args["img_size"];
    c.img_size = as_int(v.is_array() && !v.empty() ? v[0] : v, "img_size", source);
  }
  if (has("patch_size")) c.patch_size = as_int(args["patch_size"], "patch_size", source);
  if (has("in_chans")) c.in_chans = as_int(args["in_chans"], "in_chans", source);
  if (has("embed_dim")) c.embed_dim = as_int(args["embed_dim"], "embed_dim", source);
  if (has("depth")) c.depth = as_int(args["depth"], "depth", source);
  if (has("num_heads")) c.num_heads = as_int(args["num_heads"], "num_heads", source);
  if (has("num_classes")) c.num_classes = as_int(args["num_classes"], "num_classes", source);
  if (has("mlp_ratio")) {
    // timm's int(embed_dim * mlp_ratio), forgiving the product's rounding: a
    // ratio saved as hidden / dim (22 * (49 / 22) = 48.999...) gives hidden back.
    const double hidden = c.embed_dim * as_double(args["mlp_ratio"], "mlp_ratio", source);
    c.mlp_hidden = static_cast<int64_t>(std::floor(hidden + 1e-6));
  }
  if (has("qkv_bias")) c.qkv_bias = as_bool(args["qkv_bias"], "qkv_bias", source);
  if (has("class_token")) c.class_token = as_bool(args["class_token"], "class_token", source);
  if (has("no_embed_class")) c.no_embed_class = as_bool(args["no_embed_class"], "no_embed_class", source);
  if (has("global_pool")) c.global_pool = value_of<std::string>(args, "global_pool", source);
  if (has("fc_norm")) c.fc_norm = as_bool(args["fc_norm"], "fc_norm", source);
  else if (has("global_pool")) c.fc_norm = c.global_pool == "avg";  // timm's default rule
}

// pretrained_cfg's per-channel mean or std into `values`, when cfg holds `key`.
void read_channel_values(const json& cfg, const char* key, double (&values)[3], const std::string& source) {
  if (!cfg.contains(key)) return;
  const auto read = value_of<std::vector<double>>(cfg, key, source);
  check(read.size() == 3, "{}: config key '{}' holds {} values, expected 3 (R, G, B)", source, key, read.size());
  std::copy(read.begin(), read.end(), values);
}

void apply_pretrained_cfg(const json& cfg, VitConfig& c, const std::string& source) {
  Preprocess& p = c.preprocess;
  if (cfg.contains("input_size")) {
    const auto size = value_of<std::vector<int64_t>>(cfg, "input_size", source);  // [C, H, W]
    check(!size.empty(), "{}: config key 'input_size' is empty", source);
    p.input_size = size.back();
  }
  p.crop_pct = value_or(cfg, "crop_pct", p.crop_pct, source);
  p.interpolation = value_or(cfg, "interpolation", p.interpolation, source);
  read_channel_values(cfg, "mean", p.mean, source);
  read_channel_values(cfg, "std", p.std, source);
  c.label_names = value_or(cfg, "label_names", c.label_names, source);
}

// Hugging Face ViTConfig / DeiTConfig.
void apply_hf_config(const json& j, VitConfig& c, const std::string& source) {
  c.embed_dim = value_or(j, "hidden_size", c.embed_dim, source);
  c.depth = value_or(j, "num_hidden_layers", c.depth, source);
  c.num_heads = value_or(j, "num_attention_heads", c.num_heads, source);
  c.mlp_hidden = value_or(j, "intermediate_size", c.mlp_hidden, source);
  c.img_size = value_or(j, "image_size", c.img_size, source);
  c.patch_size = value_or(j, "patch_size", c.patch_size, source);
  c.in_chans = value_or(j, "num_channels", c.in_chans, source);
  c.ln_eps = value_or(j, "layer_norm_eps", 1e-12, source);  // HF's default
  c.qkv_bias = value_or(j, "qkv_bias", c.qkv_bias, source);
  if (j.contains("id2label")) c.num_classes = static_cast<int64_t>(object_at(j, "id2label", source).size());
  // ViTImageProcessor: resize straight to the input size, mean = std = 0.5.
  c.preprocess.input_size = c.img_size;
  c.preprocess.crop_pct = 1.0;
  c.preprocess.interpolation = "bilinear";
  for (int i = 0; i < 3; ++i) c.preprocess.mean[i] = c.preprocess.std[i] = 0.5;
}

json read_json_file(const std::string& path) {
  std::error_code ignored;  // an unreadable path is reported by the open below
  check(!fs::is_directory(path, ignored), "config file '{}' is a directory, not a JSON file", path);
  std::ifstream in(path);
  check(in.good(), "cannot open config file '{}'", path);
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail("config file '{}' is not valid JSON: {}", path, e.what());
  }
}

// "engine": {"halting": {"gamma": 10, "beta": -30, "eps": 0.01}}; absent keys keep their defaults.
HaltingConfig halting_from_json(const json& j, const std::string& source) {
  check(j.is_object(), "{}: engine.halting must be an object, got {}", source, j.dump());
  HaltingConfig halting;
  for (const auto& [key, value] : j.items()) {
    double* field = key == "gamma" ? &halting.gamma : key == "beta" ? &halting.beta : key == "eps" ? &halting.eps : nullptr;
    check(field != nullptr, "{}: unknown key engine.halting.{} (expected gamma, beta, eps)", source, key);
    *field = as_double(value, key.c_str(), source);
  }
  halting.validate(source);
  return halting;
}

void apply_config_json(const json& j, VitConfig& c, const std::string& source) {
  check(j.is_object(), "{}: a config must be a JSON object, got {}", source, j.type_name());
  const std::string model_type = value_or(j, "model_type", std::string(), source);
  if (model_type == "vit" || model_type == "deit" || j.contains("hidden_size")) {
    apply_hf_config(j, c, source);
    return;
  }
  if (j.contains("model_args")) apply_timm_args(object_at(j, "model_args", source), c, source);
  c.num_classes = value_or(j, "num_classes", c.num_classes, source);
  if (!j.contains("model_args")) c.global_pool = value_or(j, "global_pool", c.global_pool, source);
  c.preprocess.input_size = c.img_size;
  if (j.contains("pretrained_cfg")) apply_pretrained_cfg(object_at(j, "pretrained_cfg", source), c, source);
  c.label_names = value_or(j, "label_names", c.label_names, source);
  // Settings timm's model_args cannot hold (timm would reject unknown keys).
  if (j.contains("engine")) {
    const json& e = object_at(j, "engine", source);
    c.mixers = value_or(e, "mixers", c.mixers, source);
    c.ln_eps = value_or(e, "ln_eps", c.ln_eps, source);
    c.distilled = value_or(e, "distilled", c.distilled, source);
    if (e.contains("halting")) c.halting = halting_from_json(e["halting"], source);
  }
}

// Applies the first config there is (see vit_checkpoint.h) to c; returns its
// name for errors.
std::string apply_config_source(const Checkpoint& checkpoint, const VitLoadOptions& options, VitConfig& c) {
  const std::string beside = (fs::path(checkpoint.directory) / "config.json").string();
  if (!options.config_path.empty() || fs::exists(beside)) {
    const std::string path = options.config_path.empty() ? beside : options.config_path;
    apply_config_json(read_json_file(path), c, path);
    return path;
  }
  if (holds_timm_args(checkpoint.metadata)) {
    const std::string source = checkpoint.source + " __metadata__";
    apply_timm_args(json(checkpoint.metadata), c, source);
    c.preprocess.input_size = c.img_size;
    return source;
  }
  // Not an error (a bare timm checkpoint has none), but the defaults change the
  // numbers a model gives, so say so.
  fmt::print(stderr,
             "note: no config.json beside {}: architecture inferred from the tensor shapes, assuming what they do "
             "not fix (num_heads {}, ln_eps {}, global_pool '{}'), and timm's ImageNet preprocessing assumed "
             "(mean/std, crop_pct {}, {}); pass a config.json (--config, [teacher] config) to set them\n",
             checkpoint.source, c.num_heads, c.ln_eps, c.global_pool, c.preprocess.crop_pct,
             c.preprocess.interpolation);
  return checkpoint.source;
}

// The sizes that the checkpoint's tensor shapes fix must be the config's, checked
// before the model is built: a config claiming depth 100000000 would otherwise
// allocate that many blocks before load_parameters compares any shape.
void check_sizes_match_checkpoint(const VitConfig& config, const VitConfig& from_shapes, const std::string& source,
                                  const std::string& checkpoint_source) {
  const std::pair<const char*, int64_t VitConfig::*> sizes[] = {
      {"depth", &VitConfig::depth},
      {"embed_dim", &VitConfig::embed_dim},
      {"num_classes", &VitConfig::num_classes},
      {"in_chans", &VitConfig::in_chans},
      {"patch_size", &VitConfig::patch_size},
      {"mlp hidden width (embed_dim * mlp_ratio)", &VitConfig::mlp_hidden},
  };
  for (const auto& [key, field] : sizes) {
    check(config.*field == from_shapes.*field, "{}: {} = {}, but the checkpoint {} has {}", source, key,
          config.*field, checkpoint_source, from_shapes.*field);
  }
  // img_size may differ, since the position embeddings are resampled, but
  // within reason: 16 times the patches is 4 times the side.
  constexpr int64_t kMaxPatchGrowth = 16;
  check(config.num_patches() <= kMaxPatchGrowth * from_shapes.num_patches(),
        "{}: img_size = {} gives {} patches, more than {} times the {} of the checkpoint {} (img_size {})", source,
        config.img_size, config.num_patches(), kMaxPatchGrowth, from_shapes.num_patches(), checkpoint_source,
        from_shapes.img_size);
}

}  // namespace

VitConfig resolve_vit_config(const Checkpoint& checkpoint, const NamedTensors& timm_tensors,
                             const VitLoadOptions& options) {
  const VitConfig from_shapes = infer_config(timm_tensors, checkpoint.source);
  VitConfig c = from_shapes;
  const std::string source = apply_config_source(checkpoint, options, c);
  if (options.img_size > 0) {
    c.img_size = options.img_size;
    c.preprocess.input_size = options.img_size;
  }
  check_sizes_match_checkpoint(c, from_shapes, source, checkpoint.source);
  c.validate(source);
  return c;
}

// ------------------------------------------------------------------ pos embed

namespace {

// PyTorch's bicubic kernel (A = -0.75) weights for fractional offset t.
void cubic_weights(double t, double w[4]) {
  const double a = -0.75;
  auto near = [&](double x) { return ((a + 2) * x - (a + 3)) * x * x + 1; };           // |x| <= 1
  auto far = [&](double x) { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; };      // 1 < |x| < 2
  w[0] = far(t + 1);
  w[1] = near(t);
  w[2] = near(1 - t);
  w[3] = far(2 - t);
}

// Resizes one axis of a [rows, in, cols] block to [rows, out, cols].
std::vector<double> resize_axis(const std::vector<double>& src, int64_t rows, int64_t in, int64_t out, int64_t cols) {
  std::vector<double> dst(static_cast<size_t>(rows * out * cols), 0.0);
  const double scale = static_cast<double>(in) / out;
  for (int64_t o = 0; o < out; ++o) {
    const double pos = (o + 0.5) * scale - 0.5;  // align_corners = false
    const int64_t base = static_cast<int64_t>(std::floor(pos));
    double w[4];
    cubic_weights(pos - base, w);
    for (int k = 0; k < 4; ++k) {
      const int64_t i = std::clamp<int64_t>(base - 1 + k, 0, in - 1);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) dst[(r * out + o) * cols + c] += w[k] * src[(r * in + i) * cols + c];
    }
  }
  return dst;
}

}  // namespace

Tensor resample_pos_embed(const Tensor& pos_embed, int64_t prefix_tokens, int64_t new_grid) {
  const int64_t dim = pos_embed.size(2);
  const int64_t old_patches = pos_embed.size(1) - prefix_tokens;
  const int64_t old_grid = grid_side(old_patches);
  check(old_grid > 0, "pos_embed of {} patch tokens is not a square grid", old_patches);
  std::vector<double> values = pos_embed.to_doubles();
  std::vector<double> prefix(values.begin(), values.begin() + prefix_tokens * dim);
  std::vector<double> grid(values.begin() + prefix_tokens * dim, values.end());  // [gh, gw, D]
  grid = resize_axis(grid, 1, old_grid, new_grid, old_grid * dim);       // rows
  grid = resize_axis(grid, new_grid, old_grid, new_grid, dim);           // columns
  prefix.insert(prefix.end(), grid.begin(), grid.end());
  return Tensor::from_vector(prefix, {1, prefix_tokens + new_grid * new_grid, dim}).to(DType::F32);
}

// ------------------------------------------------------------------ loading

void load_parameters(VisionTransformer& model, const NamedTensors& tensors, const std::string& source) {
  std::map<std::string, const Tensor*> available;
  for (const auto& [name, t] : tensors) available[name] = &t;
  std::vector<std::string> missing, wrong_shape;
  std::set<std::string> used;
  const int64_t pos_embed_prefix = model.config.no_embed_class ? 0 : model.config.num_prefix_tokens();
  NoGradGuard no_grad;
  model.visit([&](const std::string& name, Tensor& param) {
    auto found = available.find(name);
    if (found == available.end()) {
      missing.push_back(name);
      return;
    }
    used.insert(name);
    Tensor value = *found->second;
    // A pos_embed for another grid is resampled; one that fits no grid after
    // the model's prefix tokens is reported with the other mis-shaped tensors.
    if (name == "pos_embed" && value.shape() != param.shape() && value.dim() == 3 && value.size(2) == param.size(2) &&
        grid_side(value.size(1) - pos_embed_prefix) > 0) {
      value = resample_pos_embed(value, pos_embed_prefix, model.config.grid());
    }
    if (value.shape() != param.shape()) {
      wrong_shape.push_back(fmt::format("{} (checkpoint {}, model {})", name, shape_str(value.shape()),
                                        shape_str(param.shape())));
      return;
    }
    copy_into(param, value.to(param.device()));
  });
  std::vector<std::string> unexpected;
  for (const auto& [name, t] : available) {
    if (!used.count(name)) unexpected.push_back(name);
  }
  check(missing.empty() && unexpected.empty() && wrong_shape.empty(),
        "{}: checkpoint does not fit the model.\n  missing: [{}]\n  unexpected: [{}]\n  wrong shape: [{}]", source,
        fmt::join(missing, ", "), fmt::join(unexpected, ", "), fmt::join(wrong_shape, ", "));
}

std::unique_ptr<VisionTransformer> load_vit(const std::string& path, const VitLoadOptions& options) {
  Checkpoint checkpoint = load_checkpoint(path);
  NamedTensors tensors = to_timm_names(checkpoint.tensors, checkpoint.source);
  VitConfig config = resolve_vit_config(checkpoint, tensors, options);
  auto model = std::make_unique<VisionTransformer>(config);
  load_parameters(*model, tensors, checkpoint.source);
  return model;
}

// ------------------------------------------------------------------ saving

json vit_config_json(const VitConfig& c) {
  json args = {{"img_size", c.img_size},     {"patch_size", c.patch_size},  {"in_chans", c.in_chans},
               {"num_classes", c.num_classes}, {"embed_dim", c.embed_dim},  {"depth", c.depth},
               {"num_heads", c.num_heads},   {"mlp_ratio", static_cast<double>(c.mlp_hidden) / c.embed_dim},
               {"qkv_bias", c.qkv_bias},     {"class_token", c.class_token}, {"no_embed_class", c.no_embed_class},
               {"global_pool", c.global_pool}, {"fc_norm", c.fc_norm}};
  const Preprocess& p = c.preprocess;
  json pretrained = {{"input_size", {c.in_chans, p.input_size, p.input_size}},
                     {"interpolation", p.interpolation},
                     {"crop_pct", p.crop_pct},
                     {"mean", {p.mean[0], p.mean[1], p.mean[2]}},
                     {"std", {p.std[0], p.std[1], p.std[2]}},
                     {"num_classes", c.num_classes}};
  if (!c.label_names.empty()) pretrained["label_names"] = c.label_names;
  json engine = {{"ln_eps", c.ln_eps}, {"distilled", c.distilled}, {"mixers", c.mixers}};
  if (c.halting) engine["halting"] = {{"gamma", c.halting->gamma}, {"beta", c.halting->beta}, {"eps", c.halting->eps}};
  return {{"architecture", c.distilled ? "vit_distilled" : "vit"},
          {"num_classes", c.num_classes},
          {"num_features", c.embed_dim},
          {"global_pool", c.global_pool},
          {"model_args", args},
          {"pretrained_cfg", pretrained},
          {"engine", engine}};
}

void save_vit(VisionTransformer& model, const std::string& directory) {
  fs::create_directories(directory);
  save_safetensors((fs::path(directory) / "model.safetensors").string(), model.named_parameters(),
                   {{"format", "pt"}});
  write_file_atomic((fs::path(directory) / "config.json").string(), vit_config_json(model.config).dump(1) + "\n");
}

}  // namespace engine

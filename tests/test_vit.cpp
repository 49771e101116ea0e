// ViT parity with PyTorch (timm and Hugging Face fixtures computed in float64),
// checkpoint round trips for the model variants, and config.json errors.
#include <gmock/gmock.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "engine/ops/ops.h"
#include "models/vit_checkpoint.h"
#include "tests/expect_error.h"
#include "tests/gradcheck.h"
#include "tests/shared_data.h"

namespace engine {
namespace {

using testing::shared_path;

// max |a - e| <= tolerance * max(1, max |e|): a relative check at the tensor's scale.
void expect_matches(const Tensor& actual, const Tensor& expected, double tolerance, const std::string& what) {
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  std::vector<double> a = actual.to_doubles(), e = expected.to_doubles();
  double scale = 1e-12, worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(e[i]));
    worst = std::max(worst, std::abs(a[i] - e[i]));
  }
  EXPECT_LE(worst, tolerance * scale) << what << ": max abs error " << worst << " at scale " << scale;
}

// Both attention paths: materialising the probabilities (when the trace asks
// for them) and the fused op (otherwise), forward and backward.
TEST(VitParity, TimmForwardAndGradients) {
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  auto model = load_vit(shared_path("fixtures/timm_vit_tiny.safetensors"));
  SafetensorsFile io = SafetensorsFile::open(shared_path("fixtures/timm_vit_tiny_io.safetensors"));
  EXPECT_EQ(model->config.embed_dim, 64);
  EXPECT_EQ(model->config.num_heads, 4);  // from the safetensors __metadata__

  for (auto& [name, p] : model->named_parameters()) p.set_requires_grad(true);
  // Traced with the probabilities, traced without them (fused attention),
  // and untraced (also the residual adds inside the GEMMs and the stream's
  // gradients summed by the norms: Block::forward's own path).
  for (int mode : {0, 1, 2}) {
    const bool want_probs = mode == 0, traced = mode < 2;
    SCOPED_TRACE(want_probs ? "attention probabilities materialised" : traced ? "fused attention" : "untraced");
    for (auto& [name, p] : model->named_parameters()) p.zero_grad();
    ForwardTrace trace;
    trace.want_probs = want_probs;
    Tensor logits = model->forward(io.get("input"), {}, traced ? &trace : nullptr);
    expect_matches(logits, io.get("logits"), 1e-5, "logits");
    for (size_t i = 0; i < trace.blocks.size(); ++i) {
      expect_matches(trace.blocks[i].output, io.get(fmt::format("blocks.{}.out", i)), 1e-5, "block out");
      if (want_probs) {
        expect_matches(trace.blocks[i].attn_probs, io.get(fmt::format("blocks.{}.attn_probs", i)), 1e-5, "probs");
      } else {
        EXPECT_FALSE(trace.blocks[i].attn_probs.defined());
      }
    }
    Tensor loss = cross_entropy(logits, io.get("labels"));
    expect_matches(reshape(loss, {1}), io.get("loss"), 1e-5, "loss");
    loss.backward();
    int checked = 0;
    for (auto& [name, p] : model->named_parameters()) {
      ASSERT_TRUE(p.grad().defined()) << name;
      expect_matches(p.grad(), io.get("grad." + name), 1e-4, "grad " + name);
      ++checked;
    }
    EXPECT_EQ(checked, 4 + 12 * 3 + 2 + 2);  // cls, pos, patch w/b; 12 per block; norm; head
  }
}

class HfParity : public ::testing::TestWithParam<const char*> {};

TEST_P(HfParity, ForwardMatches) {
  REQUIRE_SHARED("fixtures/hf_vit_tiny_io.safetensors");
  VitLoadOptions options;
  options.config_path = shared_path("fixtures/hf_vit_tiny_config.json");
  auto model = load_vit(shared_path(GetParam()), options);
  EXPECT_DOUBLE_EQ(model->config.ln_eps, 1e-12);
  SafetensorsFile io = SafetensorsFile::open(shared_path("fixtures/hf_vit_tiny_io.safetensors"));
  NoGradGuard no_grad;
  ForwardTrace trace;
  trace.want_probs = io.contains("blocks.0.attn_probs");
  expect_matches(model->forward(io.get("input"), {}, &trace), io.get("logits"), 1e-5, "logits");
  for (size_t i = 0; i < trace.blocks.size(); ++i) {
    expect_matches(trace.blocks[i].output, io.get(fmt::format("blocks.{}.out", i)), 1e-5, "block out");
    if (trace.want_probs) {
      expect_matches(trace.blocks[i].attn_probs, io.get(fmt::format("blocks.{}.attn_probs", i)), 1e-5, "probs");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(NameSets, HfParity,
                         ::testing::Values("fixtures/hf_vit_tiny.safetensors",
                                           "fixtures/hf_vit_tiny_classic.safetensors"));

VitConfig small_config() {
  VitConfig c;
  c.img_size = 16;
  c.patch_size = 4;
  c.embed_dim = 32;
  c.depth = 2;
  c.num_heads = 2;
  c.mlp_hidden = 64;
  c.num_classes = 5;
  return c;
}

// Saves a model, loads it back through config.json, and compares logits.
// Every parameter is first moved off its init (zero biases, unit layer-norm
// weights, 0.02-scale weights): tensors of equal values at init would hide a
// parameter that is not loaded, or loaded into another of its kind.
void expect_round_trip(const VitConfig& config) {
  VisionTransformer model(config, 3);
  {
    NoGradGuard no_grad;
    Rng jitter(11);
    model.visit([&](const std::string&, Tensor& p) {
      copy_into(p, add(p, Tensor::uniform(p.shape(), jitter, -0.3, 0.3)));
    });
  }
  const std::string dir = testing::scratch_path("engine_vit_round_trip");
  std::filesystem::remove_all(dir);
  save_vit(model, dir);
  auto loaded = load_vit(dir);
  EXPECT_EQ(loaded->config.global_pool, config.global_pool);
  EXPECT_EQ(loaded->config.distilled, config.distilled);
  EXPECT_EQ(loaded->config.class_token, config.class_token);
  EXPECT_EQ(loaded->config.mlp_hidden, config.mlp_hidden);
  Rng rng(4);
  Tensor images = Tensor::randn({2, 3, 16, 16}, rng);
  NoGradGuard no_grad;
  testing::expect_close(loaded->forward(images), model.forward(images), 1e-6);
  std::filesystem::remove_all(dir);
}

TEST(VitCheckpoint, RoundTripClassToken) { expect_round_trip(small_config()); }

TEST(VitCheckpoint, RoundTripAvgPoolWithoutClassToken) {
  VitConfig c = small_config();
  c.class_token = false;
  c.global_pool = "avg";
  c.fc_norm = true;
  expect_round_trip(c);
}

TEST(VitCheckpoint, RoundTripHiddenWidthOfAnInexactRatio) {
  // config.json stores mlp_ratio = 49 / 22, and 22 * (49 / 22) is 48.99999... in double.
  VitConfig c = small_config();
  c.embed_dim = 22;
  c.mlp_hidden = 49;
  expect_round_trip(c);
}

TEST(VitCheckpoint, RoundTripAttentionWithoutQkvBias) {
  // A block's "attention" spec takes the model's heads and qkv_bias, both when
  // a model is built and when a student is made for it (train_distill).
  VitConfig c = small_config();
  c.qkv_bias = false;
  c.num_heads = 4;
  const MixerSpec spec = c.mixer_spec("attention");
  EXPECT_FALSE(spec.qkv_bias);
  EXPECT_EQ(spec.heads, 4);
  EXPECT_TRUE(c.mixer_spec("attention:qkv_bias=true").qkv_bias);
  expect_round_trip(c);
}

TEST(VitCheckpoint, RoundTripDistilledDeiT) {
  VitConfig c = small_config();
  c.distilled = true;
  expect_round_trip(c);
}

TEST(VitCheckpoint, ShapesAloneGiveTheArchitecture) {
  VisionTransformer model(small_config(), 5);
  NamedTensors tensors = model.named_parameters();
  Checkpoint checkpoint{"memory", ".", tensors, {}};
  VitConfig inferred = resolve_vit_config(checkpoint, tensors, {});
  EXPECT_EQ(inferred.embed_dim, 32);
  EXPECT_EQ(inferred.depth, 2);
  EXPECT_EQ(inferred.img_size, 16);
  EXPECT_EQ(inferred.mlp_hidden, 64);
  EXPECT_EQ(inferred.num_classes, 5);
}

TEST(VitCheckpoint, MismatchListsOffendingNames) {
  VisionTransformer model(small_config(), 5);
  NamedTensors tensors = model.named_parameters();
  tensors.erase(tensors.begin() + 3);                    // a missing tensor
  tensors.emplace_back("blocks.9.extra", Tensor::zeros({1}));  // an unexpected one
  try {
    load_parameters(model, tensors, "ckpt");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("missing: [patch_embed.proj.bias]"));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("unexpected: [blocks.9.extra]"));
  }
}

TEST(VitCheckpoint, PosEmbedResampling) {
  Rng rng(6);
  Tensor pos = Tensor::randn({1, 1 + 16, 8}, rng);
  testing::expect_close(resample_pos_embed(pos, 1, 4), pos, 1e-6);  // same grid: unchanged
  Tensor bigger = resample_pos_embed(pos, 1, 6);
  EXPECT_EQ(bigger.shape(), (Shape{1, 37, 8}));
  testing::expect_close(narrow(bigger, 1, 0, 1), narrow(pos, 1, 0, 1), 0.0);  // class token row kept
  // A constant field stays constant (the cubic weights sum to one).
  Tensor constant = Tensor::full({1, 16, 3}, 2.5);
  testing::expect_close(resample_pos_embed(constant, 0, 7), Tensor::full({1, 49, 3}, 2.5), 1e-6);
  // A field linear in row and column, halved from 16 x 16 to 8 x 8: new row
  // or column o reads source position (o + 0.5) * 2 - 0.5 = 2 o + 0.5
  // (align_corners = false, as timm), midway between two source rows, where
  // the symmetric cubic weights reproduce a linear field exactly whatever the
  // kernel's A; away from the border (taps clamped there) the result is the
  // field at that position. Each channel has its own slopes, so a swap of rows
  // and columns shows.
  const double slopes[2][2] = {{0.5, -0.25}, {-0.3, 0.7}};  // [channel][row, column]
  std::vector<double> field;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      for (int ch = 0; ch < 2; ++ch) field.push_back(slopes[ch][0] * r + slopes[ch][1] * c + ch);
  const std::vector<double> halved = resample_pos_embed(Tensor::from_vector(field, {1, 256, 2}), 0, 8).to_doubles();
  ASSERT_EQ(halved.size(), 8u * 8u * 2u);
  for (int i = 1; i <= 6; ++i)  // rows and columns 1..6 read source rows 1..14 only
    for (int j = 1; j <= 6; ++j)
      for (int ch = 0; ch < 2; ++ch) {
        const double expected = slopes[ch][0] * (2 * i + 0.5) + slopes[ch][1] * (2 * j + 0.5) + ch;
        EXPECT_NEAR(halved[(i * 8 + j) * 2 + ch], expected, 1e-5) << "row " << i << " column " << j << " ch " << ch;
      }
  // A model asked to run at a larger resolution resamples on load.
  VisionTransformer model(small_config(), 7);
  const std::string dir = testing::scratch_path("engine_vit_resample");
  save_vit(model, dir);
  VitLoadOptions options;
  options.img_size = 24;
  auto loaded = load_vit(dir, options);
  EXPECT_EQ(loaded->pos_embed.shape(), (Shape{1, 1 + 36, 32}));
  testing::expect_close(loaded->pos_embed, resample_pos_embed(model.pos_embed, 1, 6), 0.0);
  std::filesystem::remove_all(dir);
}

// small_config() saved to a scratch folder (model.safetensors, whose
// __metadata__ is torch's {"format": "pt"}, and config.json) for tests that
// edit its config; removed at the end of the scope.
struct SavedSmallVit {
  std::string dir;
  nlohmann::json config;  // config.json as saved

  explicit SavedSmallVit(const std::string& name) : dir(testing::scratch_path(name)) {
    std::filesystem::remove_all(dir);
    VisionTransformer model(small_config(), 5);
    save_vit(model, dir);
    std::ifstream(config_path()) >> config;
  }
  ~SavedSmallVit() { std::filesystem::remove_all(dir); }

  std::string config_path() const { return dir + "/config.json"; }

  // The error of loading the model with config.json holding `text`.
  std::string error_with_text(const std::string& text) const {
    std::ofstream(config_path()) << text;
    return testing::error_of([&] { load_vit(dir); });
  }

  // The error of loading the model with `edit` applied to its config.json.
  std::string error_with(const std::function<void(nlohmann::json&)>& edit) const {
    nlohmann::json edited = config;
    edit(edited);
    return error_with_text(edited.dump());
  }
};

using ::testing::AllOf;
using ::testing::HasSubstr;

// A config.json value of the wrong type or length is an error naming its key
// (not a JSON library exception, nor a read past the end of a short array).
TEST(VitCheckpoint, BadConfigValuesNameTheKey) {
  const SavedSmallVit saved("engine_vit_bad_config");
  EXPECT_THAT(saved.error_with([](nlohmann::json& c) { c["pretrained_cfg"]["mean"] = nlohmann::json::array({0.5}); }),
              HasSubstr("config key 'mean' holds 1 values, expected 3"));
  EXPECT_THAT(saved.error_with([](nlohmann::json& c) { c["num_classes"] = "5"; }),
              HasSubstr("config key 'num_classes'"));
  EXPECT_THAT(saved.error_with([](nlohmann::json& c) { c["engine"]["mixers"] = "attention"; }),
              HasSubstr("config key 'mixers'"));
  EXPECT_THAT(saved.error_with([](nlohmann::json& c) { c["model_args"]["depth"] = "two"; }),
              HasSubstr("config key 'depth' is not an integer: \"two\""));
  EXPECT_THAT(saved.error_with([](nlohmann::json& c) { c["model_args"]["depth"] = "2 blocks"; }),
              HasSubstr("config key 'depth' is not an integer"));
}

// A config.json or section of another JSON type is an error, not a section
// skipped (which would leave the inferred architecture and default preprocessing).
TEST(VitCheckpoint, ConfigAndItsSectionsMustBeJsonObjects) {
  const SavedSmallVit saved("engine_vit_config_not_object");
  const std::string path = saved.config_path();
  EXPECT_THAT(saved.error_with_text("[1,2,3]"),
              AllOf(HasSubstr(path), HasSubstr("a config must be a JSON object, got array")));
  for (const char* section : {"model_args", "pretrained_cfg", "engine"}) {
    EXPECT_THAT(saved.error_with([&](nlohmann::json& c) { c[section] = 5; }),
                AllOf(HasSubstr(path), HasSubstr(fmt::format("config key '{}' must be a JSON object, got 5", section))))
        << section;
  }
  EXPECT_THAT(saved.error_with([](nlohmann::json& c) { c["pretrained_cfg"] = "x"; }),
              AllOf(HasSubstr(path), HasSubstr("config key 'pretrained_cfg' must be a JSON object, got \"x\"")));
  // A Hugging Face config's id2label: the size of a string is not a class count.
  EXPECT_THAT(saved.error_with_text(R"({"model_type": "vit", "id2label": "x"})"),
              AllOf(HasSubstr(path), HasSubstr("config key 'id2label' must be a JSON object")));
}

TEST(VitCheckpoint, ConfigThatIsADirectoryIsNamed) {
  const SavedSmallVit saved("engine_vit_config_directory");
  VitLoadOptions options;
  options.config_path = saved.dir;
  EXPECT_THAT(testing::error_of([&] { load_vit(saved.dir, options); }),
              HasSubstr("config file '" + saved.dir + "' is a directory"));
  std::filesystem::remove(saved.config_path());
  std::filesystem::create_directory(saved.config_path());
  EXPECT_THAT(testing::error_of([&] { load_vit(saved.dir); }),
              HasSubstr("config file '" + saved.config_path() + "' is a directory"));
}

// Preprocessing values that would silently spoil every prediction (std 0
// divides by zero) or fail later without the file's name.
TEST(VitCheckpoint, BadPreprocessingValuesNameTheFileAndKey) {
  const SavedSmallVit saved("engine_vit_bad_preprocessing");
  const std::string path = saved.config_path();
  auto error_with_pretrained = [&](const char* key, const nlohmann::json& value) {
    return saved.error_with([&](nlohmann::json& c) { c["pretrained_cfg"][key] = value; });
  };
  const std::pair<std::pair<const char*, nlohmann::json>, std::string> cases[] = {
      {{"std", {0, 0, 0}}, "std [0] = 0 must be finite and positive"},
      {{"std", {0.2, 0.2, -0.1}}, "std [2] = -0.1 must be finite and positive"},
      {{"crop_pct", 0}, "crop_pct 0 must be in (0, 1]"},
      {{"crop_pct", 1.5}, "crop_pct 1.5 must be in (0, 1]"},
      {{"interpolation", "nearest"}, "interpolation 'nearest' is not supported"},
      {{"input_size", {3, 0, 0}}, "input_size 0 must be positive"},
      {{"label_names", {"a", "b", "c"}}, "3 label_names for 5 classes"},
  };
  for (const auto& [edit, expected] : cases) {
    EXPECT_THAT(error_with_pretrained(edit.first, edit.second), AllOf(HasSubstr(path), HasSubstr(expected)))
        << edit.first << " = " << edit.second.dump();
  }
  // JSON holds no NaN; a config made in code can.
  VitConfig nan_mean = small_config();
  nan_mean.preprocess.mean[1] = std::nan("");
  EXPECT_THAT(testing::error_of([&] { nan_mean.validate("made in code"); }),
              HasSubstr("made in code: preprocessing mean [1] = nan must be finite"));
}

// Sizes the tensors fix are compared before the model is built, so a config
// claiming a huge model is an error naming the key, not a failed allocation.
TEST(VitCheckpoint, ConfigSizesMustMatchTheCheckpointBeforeBuilding) {
  const SavedSmallVit saved("engine_vit_absurd_sizes");
  const std::string path = saved.config_path();
  // Without engine.mixers (timm's config.json has none), whose length would stop a bad depth.
  auto timm_config_of_depth_1e8 = [](nlohmann::json& c) {
    c["engine"].erase("mixers");
    c["model_args"]["depth"] = 100000000;
  };
  EXPECT_THAT(saved.error_with(timm_config_of_depth_1e8),
              AllOf(HasSubstr(path), HasSubstr("depth = 100000000, but the checkpoint"),
                    HasSubstr("model.safetensors has 2")));
  EXPECT_THAT(saved.error_with([](nlohmann::json& c) { c["num_classes"] = 1e11; }),
              AllOf(HasSubstr(path), HasSubstr("num_classes = 100000000000, but the checkpoint"),
                    HasSubstr("model.safetensors has 5")));
  // A larger image is allowed (the position embeddings are resampled), a vast one is not.
  EXPECT_THAT(saved.error_with([](nlohmann::json& c) { c["model_args"]["img_size"] = 10000000; }),
              AllOf(HasSubstr(path), HasSubstr("img_size = 10000000 gives"), HasSubstr("more than 16 times")));
}

// torch writes {"format": "pt"} into every safetensors file; that says nothing
// of the architecture, so without config.json the guess is noted. Metadata
// holding model_args keys is used instead, and needs no note.
TEST(VitCheckpoint, InferredConfigIsNotedUnlessMetadataDescribesTheModel) {
  const SavedSmallVit saved("engine_vit_no_config");
  std::filesystem::remove(saved.config_path());
  ASSERT_EQ(load_checkpoint(saved.dir).metadata, (Metadata{{"format", "pt"}}));
  ::testing::internal::CaptureStderr();
  auto inferred = load_vit(saved.dir);
  // The head count is a guess the shapes cannot check, so the note names it.
  EXPECT_THAT(::testing::internal::GetCapturedStderr(),
              AllOf(HasSubstr("note: no config.json beside"), HasSubstr("num_heads 1"), HasSubstr("--config")));
  EXPECT_EQ(inferred->config.num_heads, 1);  // embed_dim 32 / 64, at least 1

  Checkpoint described = load_checkpoint(saved.dir);
  described.metadata["num_heads"] = "2";
  ::testing::internal::CaptureStderr();
  const VitConfig config = resolve_vit_config(described, described.tensors, {});
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(config.num_heads, 2);
}

TEST(VitCheckpoint, HalfPrecisionCheckpointsLoad) {
  VisionTransformer model(small_config(), 8);
  for (DType dtype : {DType::BF16, DType::F16}) {
    NamedTensors stored;
    for (auto& [name, p] : model.named_parameters()) stored.emplace_back(name, p.to(dtype));
    VisionTransformer loaded(small_config(), 9);
    load_parameters(loaded, stored, "half checkpoint");
    // Each parameter equals the original rounded to the 16-bit type and back.
    NamedTensors original = model.named_parameters(), result = loaded.named_parameters();
    for (size_t i = 0; i < original.size(); ++i) {
      testing::expect_close(result[i].second, original[i].second.to(dtype).to(DType::F32), 0.0);
    }
  }
}

// The model's forward against one composed here from the ops, step by step as
// timm writes it: prefix tokens (class, then distillation) before the patches,
// position embeddings (before or after the prefix), pre-norm blocks with both
// residuals, every norm at the config's ln_eps, the final norm or the
// fc_norm of the averaged patch tokens, and the head(s). A hybrid (attention
// and gated_rnn blocks), every parameter moved off its init, and an ln_eps
// far from the default, so that a norm built with another eps shows.
Tensor reference_tokens(VisionTransformer& m, const Tensor& images, std::vector<BlockTrace>* blocks) {
  const VitConfig& c = m.config;
  auto ln = [&](const LayerNorm& n, const Tensor& t) { return layer_norm(t, n.weight, n.bias, c.ln_eps); };
  const int64_t batch = images.size(0), dim = c.embed_dim;
  Tensor patches = m.patch_embed.forward(images);
  if (c.no_embed_class) patches = add(patches, m.pos_embed);
  std::vector<Tensor> parts;
  if (c.class_token) parts.push_back(expand(m.cls_token, {batch, 1, dim}));
  if (c.distilled) parts.push_back(expand(m.dist_token, {batch, 1, dim}));
  parts.push_back(patches);
  Tensor x = concat(parts, 1);
  if (!c.no_embed_class) x = add(x, m.pos_embed);
  for (Block& block : m.blocks) {
    BlockTrace trace;
    trace.input = x;
    trace.mixer_input = ln(block.norm1, x);
    trace.mixer_output = block.mixer->forward(trace.mixer_input, {}, nullptr);
    const Tensor h = add(x, trace.mixer_output);
    const Mlp& mlp = block.mlp;
    x = add(h, linear(gelu(linear(ln(block.norm2, h), mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias));
    trace.output = x;
    blocks->push_back(trace);
  }
  return x;
}

Tensor reference_logits(VisionTransformer& m, const Tensor& images, std::vector<BlockTrace>* blocks) {
  const VitConfig& c = m.config;
  auto ln = [&](const LayerNorm& n, const Tensor& t) { return layer_norm(t, n.weight, n.bias, c.ln_eps); };
  Tensor x = reference_tokens(m, images, blocks);
  if (!c.fc_norm) x = ln(m.norm, x);
  if (c.global_pool == "avg") {
    const int64_t prefix = (c.class_token ? 1 : 0) + (c.distilled ? 1 : 0);
    Tensor pooled = mean(narrow(x, 1, prefix, x.size(1) - prefix), {1});
    if (c.fc_norm) pooled = ln(m.fc_norm, pooled);
    return linear(pooled, m.head.weight, m.head.bias);
  }
  Tensor logits = linear(select(x, 1, 0), m.head.weight, m.head.bias);
  if (!c.distilled) return logits;
  return mul(add(logits, linear(select(x, 1, 1), m.head_dist.weight, m.head_dist.bias)), 0.5);
}

void expect_reference_forward(VitConfig config) {
  config.ln_eps = 0.25;
  config.mixers = {"attention", "gated_rnn:width=8"};
  VisionTransformer model(config, 3);
  NoGradGuard no_grad;
  Rng jitter(12);
  model.visit([&](const std::string&, Tensor& p) { copy_into(p, add(p, Tensor::uniform(p.shape(), jitter, -0.3, 0.3))); });
  Rng rng(5);
  const Tensor images = Tensor::randn({2, 3, 16, 16}, rng);
  std::vector<BlockTrace> expected;
  const Tensor reference = reference_logits(model, images, &expected);
  testing::expect_close(model.forward(images), reference, 1e-5);
  // The traced path (Block::forward_with), which train_distill reads: the
  // same logits, and each block's mixer input (LN1 of the stream), mixer
  // output and output.
  ForwardTrace trace;
  testing::expect_close(model.forward(images, {}, &trace), reference, 1e-5);
  ASSERT_EQ(trace.blocks.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(fmt::format("block {}", i));
    testing::expect_close(trace.blocks[i].input, expected[i].input, 1e-5);
    testing::expect_close(trace.blocks[i].mixer_input, expected[i].mixer_input, 1e-5);
    testing::expect_close(trace.blocks[i].mixer_output, expected[i].mixer_output, 1e-5);
    testing::expect_close(trace.blocks[i].output, expected[i].output, 1e-5);
  }
}

TEST(VitReference, ClassTokenPool) { expect_reference_forward(small_config()); }

TEST(VitReference, DistilledClassAndDistillationTokens) {
  VitConfig c = small_config();
  c.distilled = true;
  expect_reference_forward(c);
}

TEST(VitReference, AvgPoolWithFcNormAfterThePrefixTokens) {
  VitConfig c = small_config();
  c.global_pool = "avg";
  c.fc_norm = true;
  expect_reference_forward(c);
}

TEST(VitReference, AvgPoolWithoutClassToken) {
  VitConfig c = small_config();
  c.class_token = false;
  c.global_pool = "avg";
  expect_reference_forward(c);
}

TEST(VitReference, PosEmbedOnThePatchesOnly) {
  VitConfig c = small_config();
  c.no_embed_class = true;
  expect_reference_forward(c);
}

// Stochastic depth grows linearly over the blocks, from 0 at the first to
// the configured rate at the last (timm's rule).
TEST(VitReference, DropPathRateGrowsLinearlyToTheLastBlock) {
  VitConfig c = small_config();
  c.depth = 5;
  c.drop_path_rate = 0.2;
  VisionTransformer model(c, 1);
  for (int64_t i = 0; i < 5; ++i) EXPECT_NEAR(model.blocks[i].drop_path_rate, 0.05 * i, 1e-12) << "block " << i;
}

// A hybrid (a block of another mixer) at an ln_eps far from the default:
// config.json must name each block's mixer and the eps, or the loaded model
// computes other logits.
TEST(VitCheckpoint, RoundTripHybridWithItsLnEps) {
  VitConfig c = small_config();
  c.ln_eps = 0.25;
  c.mixers = {"gated_rnn:width=8", "attention"};
  expect_round_trip(c);
}

// Hugging Face's ViTConfig defaults layer_norm_eps to 1e-12 (timm: 1e-6): an
// HF config.json that leaves it out means HF's.
TEST(VitCheckpoint, HfConfigWithoutLayerNormEpsTakesTheHfDefault) {
  REQUIRE_SHARED("fixtures/hf_vit_tiny_config.json");
  nlohmann::json config = nlohmann::json::parse(std::ifstream(shared_path("fixtures/hf_vit_tiny_config.json")));
  ASSERT_TRUE(config.contains("layer_norm_eps"));
  config.erase("layer_norm_eps");
  const std::string path = testing::scratch_path("hf_config_without_eps.json");
  std::filesystem::create_directories(testing::scratch_root());
  std::ofstream(path) << config.dump();
  VitLoadOptions options;
  options.config_path = path;
  EXPECT_DOUBLE_EQ(load_vit(shared_path("fixtures/hf_vit_tiny.safetensors"), options)->config.ln_eps, 1e-12);
}

// num_parameters against the parameter count worked out from the config:
// patch embedding, prefix tokens, position embedding, per block two norms,
// qkv (its bias optional), proj, fc1, fc2; the final norm (or fc_norm) and the
// head(s).
int64_t parameters_of(const VitConfig& c) {
  const int64_t d = c.embed_dim, h = c.mlp_hidden, k = c.num_classes;
  const int64_t positions = c.no_embed_class ? c.num_patches() : c.num_tokens();
  const int64_t block = 2 * 2 * d + (3 * d * d + (c.qkv_bias ? 3 * d : 0)) + (d * d + d) + (d * h + h) + (h * d + d);
  return c.in_chans * c.patch_size * c.patch_size * d + d + c.num_prefix_tokens() * d + positions * d +
         c.depth * block + 2 * d + (c.distilled ? 2 : 1) * (d * k + k);
}

TEST(VitParameters, CountMatchesTheArchitecture) {
  VitConfig plain = small_config();
  ASSERT_EQ(parameters_of(plain), 19461);  // worked by hand for the small config
  VitConfig distilled = small_config();
  distilled.distilled = true;
  distilled.qkv_bias = false;
  VitConfig pooled = small_config();
  pooled.class_token = false;
  pooled.global_pool = "avg";
  pooled.fc_norm = true;
  pooled.depth = 3;
  for (const VitConfig& config : {plain, distilled, pooled}) {
    VisionTransformer model(config, 1);
    EXPECT_EQ(model.num_parameters(), parameters_of(config))
        << "distilled " << config.distilled << ", class token " << config.class_token;
  }
}

}  // namespace
}  // namespace engine

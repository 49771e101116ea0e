// VitConfig::validate and checkpoint loading refuse what would fail later or
// not at all, each with one error naming the value: sizes, ln_eps,
// drop_path_rate, mixer specs, DeiT pooling; a checkpoint's pos_embed among
// load_parameters' misfits; the attention mixer's head count.
#include <gtest/gtest.h>

#include <cmath>

#include "layers/mixers/factory.h"
#include "models/vit.h"
#include "models/vit_checkpoint.h"
#include "tests/expect_error.h"

namespace engine {
namespace {

using testing::expect_error_mentioning;

// timm's VisionTransformerDistilled asserts global_pool == 'token': its
// distillation head reads the distillation token. With average pooling the
// engine used to build the head and never call it (its weights untrained,
// the logits without DeiT's mean of the two heads).
TEST(VitConfigValidation, DistilledModelNeedsClassTokenPooling) {
  VitConfig c;  // ViT-B defaults, valid; the constructor fails in validate(), building nothing
  c.distilled = true;
  c.global_pool = "avg";
  c.fc_norm = true;
  expect_error_mentioning([&] { c.validate("cfg.json"); }, {"cfg.json", "distilled", "global_pool", "'avg'"});
  expect_error_mentioning([&] { VisionTransformer model(c); }, {"distilled", "global_pool"});
}

// embed_dim 0 used to be reported as "must be divisible by num_heads 12" (0 is).
TEST(VitConfigValidation, SizeErrorsNameTheSizeThatIsNotPositive) {
  VitConfig c;  // ViT-B defaults, valid
  c.embed_dim = 0;
  expect_error_mentioning([&] { c.validate("cfg.json"); }, {"cfg.json: embed_dim 0 must be positive"});
  c = VitConfig{};
  c.num_heads = -2;
  expect_error_mentioning([&] { c.validate("cfg.json"); }, {"cfg.json: num_heads -2 must be positive"});
  c = VitConfig{};
  c.patch_size = 0;
  expect_error_mentioning([&] { c.validate("cfg.json"); }, {"cfg.json: patch_size 0 must be positive"});
  c = VitConfig{};
  c.patch_size = 15;
  expect_error_mentioning([&] { c.validate("cfg.json"); }, {"img_size 224 must be a multiple of patch_size 15"});
}

TEST(VitConfigValidation, LayerNormEpsMustBeFiniteAndNonNegative) {
  VitConfig c;  // ViT-B defaults, valid
  c.ln_eps = -1e-6;
  expect_error_mentioning([&] { c.validate("cfg.json"); }, {"cfg.json", "ln_eps", "-1e-06"});
  c.ln_eps = std::nan("");
  expect_error_mentioning([&] { c.validate("cfg.json"); }, {"cfg.json", "ln_eps", "nan"});
}

TEST(VitConfigValidation, DropPathRateMustBeBelowOne) {
  VitConfig c;  // ViT-B defaults, valid
  c.drop_path_rate = 1.0;  // the last block's rate: every sample of its branches dropped
  expect_error_mentioning([&] { c.validate("cfg.json"); }, {"cfg.json", "drop_path_rate", "[0, 1)"});
  c.drop_path_rate = -0.1;
  expect_error_mentioning([&] { c.validate("cfg.json"); }, {"cfg.json", "drop_path_rate", "-0.1"});
}

// A bad mixer spec in a config file used to fail only when the blocks were
// built, with the parser's message alone: no file, no block.
TEST(VitConfigValidation, MixerSpecErrorsNameTheSourceAndTheBlock) {
  VitConfig c;  // ViT-B defaults, valid
  c.depth = 2;
  c.mixers = {"attention", "gru:width=8"};
  expect_error_mentioning([&] { c.validate("cfg.json"); },
                          {"cfg.json", "mixers[1]", "unknown token mixer 'gru'", "gated_rnn"});
  c.mixers = {"gated_rnn:depth=3", "attention"};
  expect_error_mentioning([&] { c.validate("cfg.json"); }, {"cfg.json", "mixers[0]", "'depth'"});
}

// load_parameters promises one error listing every misfit. A pos_embed whose
// rows after the model's prefix tokens form no square grid (here a class-token
// checkpoint, 1 + 64 rows, for a distilled model, 2 prefix tokens) used to stop
// it with "pos_embed of 63 patch tokens is not a square grid", from the
// resampling, naming neither the checkpoint nor the missing dist_token.
TEST(VitConfigValidation, PosEmbedForAnotherPrefixIsListedWithTheOtherMisfits) {
  VitConfig plain = vit_preset("vit_cifar_tiny_patch4_32");
  plain.depth = 1;
  VisionTransformer saved(plain);
  VitConfig distilled = plain;
  distilled.distilled = true;
  VisionTransformer model(distilled);
  expect_error_mentioning([&] { load_parameters(model, saved.named_parameters(), "ckpt"); },
                          {"ckpt: checkpoint does not fit the model", "missing: [dist_token, head_dist.weight",
                           "wrong shape: [pos_embed (checkpoint [1, 65, 192], model [1, 66, 192])]"});
}

// num_heads used to have to divide embed_dim even when no block was attention,
// and an attention block's own head count was checked only when it was built.
TEST(VitConfigValidation, HeadCountsMustDivideEmbedDimOnlyWhereABlockIsAttention) {
  VitConfig c;  // ViT-B defaults, valid
  c.depth = 2;
  c.num_heads = 5;
  expect_error_mentioning([&] { c.validate("cfg.json"); },
                          {"cfg.json: embed_dim 768 must be divisible by num_heads 5"});
  c.mixers = {"attention", "gated_rnn"};
  expect_error_mentioning([&] { c.validate("cfg.json"); },
                          {"cfg.json: mixers[0] 'attention': its heads (5) must be positive and divide embed_dim 768"});
  c.mixers = {"gated_rnn", "attention:heads=12"};
  c.validate("cfg.json");
  c.mixers = {"attention:heads=0", "mlp"};
  expect_error_mentioning([&] { c.validate("cfg.json"); }, {"cfg.json: mixers[0]", "its heads (0)"});
  c.mixers = {"mamba", "conv"};
  c.validate("cfg.json");
  c.embed_dim = 64;
  c.mlp_hidden = 128;
  c.img_size = 32;
  c.patch_size = 16;
  VisionTransformer model(c);
  EXPECT_EQ(model.config.mixers, (std::vector<std::string>{"mamba", "conv"}));
}

TEST(VitConfigValidation, AttentionHeadCountErrorsNameTheValue) {
  Rng rng(1);
  MixerSpec spec;
  spec.heads = 0;
  expect_error_mentioning([&] { make_mixer(spec, 32, rng); }, {"attention", "heads", "positive", "0"});
  spec.heads = 5;
  expect_error_mentioning([&] { make_mixer(spec, 32, rng); }, {"dim 32", "5 heads"});
}

}  // namespace
}  // namespace engine

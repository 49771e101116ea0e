// Review of layers/ and models/: config values that used to pass validation
// and misbehave later (each now one error naming the value), and the
// attention mixer's check of its head count.
#include <gtest/gtest.h>

#include "layers/mixers/factory.h"
#include "models/vit.h"
#include "tests/expect_error.h"

namespace engine {
namespace {

using testing::expect_error_mentioning;

VitConfig tiny_config() {
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

// timm's VisionTransformerDistilled asserts global_pool == 'token': its
// distillation head reads the distillation token. With average pooling the
// engine used to build the head and never call it (its weights untrained,
// the logits without DeiT's mean of the two heads).
TEST(ReviewG, DistilledModelNeedsClassTokenPooling) {
  VitConfig c = tiny_config();
  c.distilled = true;
  c.global_pool = "avg";
  c.fc_norm = true;
  expect_error_mentioning([&] { c.validate("cfg.json"); }, {"cfg.json", "distilled", "global_pool", "'avg'"});
  expect_error_mentioning([&] { VisionTransformer model(c); }, {"distilled", "global_pool"});
}

TEST(ReviewG, AttentionHeadCountErrorsNameTheValue) {
  Rng rng(1);
  MixerSpec spec;
  spec.heads = 0;
  expect_error_mentioning([&] { make_mixer(spec, 32, rng); }, {"attention", "heads", "positive", "0"});
  spec.heads = 5;
  expect_error_mentioning([&] { make_mixer(spec, 32, rng); }, {"dim 32", "5 heads"});
}

}  // namespace
}  // namespace engine

// A-ViT token halting: the halting arithmetic on hand-made scores, attention key
// masks, gradients through the halting path, masked == compacted logits,
// compacted logits independent of the batch, and the halting settings in
// checkpoints.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "data/open_dataset.h"
#include "data/subset.h"
#include "engine/ops/ops.h"
#include "layers/attention.h"
#include "layers/halting.h"
#include "layers/mixers/factory.h"
#include "models/avit.h"
#include "models/vit_checkpoint.h"
#include "tests/expect_error.h"
#include "tests/gradcheck.h"
#include "tests/image_folder_fixture.h"
#include "train/avit.h"
#include "train/distill.h"
#include "train/evaluate.h"
#include "train/sparsity_pictures.h"
#include "train/sparsity_report.h"

namespace engine {
namespace {

using testing::expect_close;
using testing::expect_gradients_match;
using testing::random_leaf;

#define EXPECT_ERROR(call, fragment) testing::expect_error_mentioning([&] { call; }, {fragment})

double max_abs_difference(const Tensor& a, const Tensor& b) {
  const std::vector<double> d = abs(sub(a, b)).to_doubles();
  return *std::max_element(d.begin(), d.end());
}

// Runs the halting bookkeeping of avit_forward_tokens over hand-made raw
// scores: one [B, N] tensor per layer, the first token a class token.
HaltingTrace trace_of(const std::vector<Tensor>& raw_scores, double eps = 0.01) {
  const int64_t depth = static_cast<int64_t>(raw_scores.size());
  HaltingTrace trace;
  trace.never_halting = 1;
  HaltingState state = start_halting(raw_scores[0].size(0), raw_scores[0].size(1), raw_scores[0].dtype(),
                                     raw_scores[0].device());
  for (int64_t l = 0; l < depth; ++l) {
    Tensor forced = forced_scores(raw_scores[l], l, depth, 1);
    trace.active.push_back(state.active);
    trace.scores.push_back(forced);
    trace.raw_scores.push_back(raw_scores[l]);
    state = advance_halting(state, forced, eps);
  }
  return trace;
}

// 1 image, a class token and three patches, 4 layers. Per layer, the raw scores of
// (cls, p1, p2, p3): p1 reaches 1 - eps at layer 2 (0.3 + 0.5 + 0.4), p2 at
// layer 0 (0.995), p3 only at the forced last layer.
std::vector<Tensor> hand_made_scores() {
  const std::vector<std::vector<double>> layers = {
      {0.9, 0.3, 0.995, 0.1}, {0.9, 0.5, 0.2, 0.1}, {0.9, 0.4, 0.3, 0.1}, {0.9, 0.7, 0.6, 0.2}};
  std::vector<Tensor> scores;
  for (const auto& values : layers) scores.push_back(Tensor::from_vector(values, {1, 4}));
  return scores;
}

TEST(Halting, HandMadeScoresGiveLayersRemaindersAndPonder) {
  const HaltingTrace trace = trace_of(hand_made_scores());
  // N_k counts the layers a token passes through; the class token never halts.
  EXPECT_EQ(halting_depths(trace).to_doubles(), (std::vector<double>{4, 3, 1, 4}));
  const std::vector<double> r = remainders(trace).to_doubles();
  EXPECT_NEAR(r[0], 1.0, 1e-12);        // class token: h = 0 before the last layer
  EXPECT_NEAR(r[1], 1.0 - 0.8, 1e-12);  // 1 - (0.3 + 0.5)
  EXPECT_NEAR(r[2], 1.0, 1e-12);        // halted at its first layer
  EXPECT_NEAR(r[3], 1.0 - 0.3, 1e-12);  // halted by the forced h = 1 of the last layer
  // Ponder over the halting tokens: (3.2 + 2 + 4.7) / 3.
  EXPECT_NEAR(ponder_loss(trace).item<double>(), 3.3, 1e-12);
  const std::vector<double> retention = layer_retention(trace);
  EXPECT_EQ(retention, (std::vector<double>{1.0, 0.75, 0.75, 0.5}));
  // Per layer the raw scores of the patches still running, normalised.
  const std::vector<double> mass = {0.3 + 0.995 + 0.1, 0.5 + 0.1, 0.4 + 0.1, 0.2};
  const double total = mass[0] + mass[1] + mass[2] + mass[3];
  const std::vector<double> distribution = halting_distribution(trace).to_doubles();
  for (size_t l = 0; l < 4; ++l) EXPECT_NEAR(distribution[l], mass[l] / total, 1e-9) << "layer " << l;
}

TEST(Halting, ClassTokenNeverHaltsAndTheLastLayerHaltsAll) {
  Rng rng(1);
  Tensor scores = Tensor::uniform({2, 5}, rng, 0.2, 0.9, DType::F64);
  const std::vector<double> before = scores.to_doubles();
  const std::vector<double> middle = forced_scores(scores, 1, 4, 1).to_doubles();
  for (int64_t b = 0; b < 2; ++b) {
    EXPECT_EQ(middle[b * 5], 0.0);
    for (int64_t k = 1; k < 5; ++k) EXPECT_EQ(middle[b * 5 + k], before[b * 5 + k]);
  }
  EXPECT_EQ(forced_scores(scores, 3, 4, 1).to_doubles(), std::vector<double>(10, 1.0));
  // Class-token scores of 0.9 every layer (as in hand_made_scores) still leave it active throughout.
  for (const Tensor& active : trace_of(hand_made_scores()).active) EXPECT_EQ(active.to_doubles()[0], 1.0);
}

TEST(Halting, ScoresComeFromTheFirstChannel) {
  Tensor x = Tensor::from_vector<double>({3.1, -7, 2.9, 5, 2.0, 1}, {1, 3, 2});
  HaltingConfig config;  // sigmoid(10 x0 - 30)
  const std::vector<double> h = halting_scores(x, config).to_doubles();
  EXPECT_NEAR(h[0], 1 / (1 + std::exp(-1.0)), 1e-12);
  EXPECT_NEAR(h[1], 1 / (1 + std::exp(1.0)), 1e-12);
  EXPECT_NEAR(h[2], 1 / (1 + std::exp(10.0)), 1e-12);
}

TEST(Halting, DepthPriorAndKl) {
  const std::vector<double> prior = gaussian_depth_prior(5, 3.0, 1.0);
  double total = 0;
  for (double p : prior) total += p;
  EXPECT_NEAR(total, 1.0, 1e-12);
  EXPECT_GT(prior[2], prior[1]);
  EXPECT_NEAR(prior[1], prior[3], 1e-12);  // symmetric around layer 3 (index 2)
  Tensor same = Tensor::from_vector(prior, {5});
  EXPECT_NEAR(prior_kl(same, prior).item<double>(), 0.0, 1e-12);
  Tensor uniform = Tensor::full({5}, 0.2, DType::F64);
  double expected = 0;
  for (double p : prior) expected += p * std::log(p / 0.2);
  EXPECT_NEAR(prior_kl(uniform, prior).item<double>(), expected, 1e-12);
  EXPECT_ERROR(gaussian_depth_prior(4, 3.0, 0.0), "std 0");
}

TEST(Halting, GradientsReachScoresThroughRemainderAndPrior) {
  Rng rng(5);
  // Block outputs per layer, first channel spread so that halting layers differ;
  // masks are constants, so the check perturbs within fixed decisions.
  std::vector<Tensor> outputs;
  for (int l = 0; l < 4; ++l) outputs.push_back(random_leaf({2, 5, 3}, rng, 2.2, 3.3));
  HaltingConfig config;
  config.gamma = 4.0;
  config.beta = -11.0;
  const std::vector<double> prior = gaussian_depth_prior(4, 2.5, 1.0);
  auto losses = [&](const std::vector<Tensor>& in) {
    std::vector<Tensor> raw;
    for (const Tensor& x : in) raw.push_back(halting_scores(x, config));
    HaltingTrace trace = trace_of(raw);
    return add(ponder_loss(trace), mul(prior_kl(halting_distribution(trace), prior), 0.5));
  };
  const std::vector<double> retention = layer_retention(trace_of([&] {
    std::vector<Tensor> raw;
    for (const Tensor& x : outputs) raw.push_back(halting_scores(x, config));
    return raw;
  }()));
  EXPECT_LT(retention[2], 1.0) << "no token halted: the check would not cover the masks";
  EXPECT_GT(retention[3], 0.0);
  expect_gradients_match(losses, outputs, 1e-6, 1e-5);
}

TEST(Halting, ConfigErrorsNameTheKey) {
  HaltingConfig c;
  c.eps = 1.5;
  EXPECT_ERROR(c.validate("my.ini"), "my.ini: halting eps must be in (0, 1), got 1.5");
  c = HaltingConfig{};
  c.gamma = -1;
  EXPECT_ERROR(c.validate("x"), "halting gamma must be positive");
}

// ------------------------------------------------------------------ attention masks

TEST(AvitAttention, MaskedKeysGetZeroProbabilityAndEqualAttentionOverTheKept) {
  Rng rng(2);
  Attention attention(8, 2, true, rng);
  Tensor x = Tensor::randn({2, 5, 8}, rng);
  // Image 0 drops tokens 2 and 4, image 1 drops token 1.
  Tensor active = Tensor::from_vector<float>({1, 1, 0, 1, 0, 1, 0, 1, 1, 1}, {2, 5});
  ForwardContext ctx;
  ctx.active = active;
  Tensor probs;
  Tensor masked = attention.forward(x, ctx, &probs);
  const std::vector<float> p = probs.contiguous().to_floats();
  const std::vector<float> keep = active.to_floats();
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t q = 0; q < 5; ++q)
        for (int64_t k = 0; k < 5; ++k) {
          const float value = p[((b * 2 + h) * 5 + q) * 5 + k];
          if (keep[b * 5 + k] == 0) EXPECT_EQ(value, 0.0f);
          else EXPECT_GT(value, 0.0f);
        }
  // Each image's kept rows equal attention run over its kept tokens alone.
  const std::vector<std::vector<int64_t>> kept = {{0, 1, 3}, {0, 2, 3, 4}};
  for (int64_t b = 0; b < 2; ++b) {
    Tensor index = Tensor::from_vector(kept[b], {static_cast<int64_t>(kept[b].size())});
    Tensor alone = attention.forward(index_select(narrow(x, 0, b, 1), 1, index), {}, nullptr);
    expect_close(index_select(narrow(masked, 0, b, 1), 1, index), alone, 1e-5);
  }
}

// Halted tokens are absent for every sequential mixer on the masked path: at
// the kept tokens the output equals the mixer run over the kept tokens alone.
// The scans make them identity steps by themselves; for a conv over tokens
// (mamba's, the conv mixer's) avit_mix lays the kept tokens side by side.
TEST(AvitMixers, HaltedTokensAreAbsentForTheSequentialMixers) {
  for (const std::string spec : {"gated_rnn:width=8", "mamba:d_state=4,conv_kernel=1", "mamba:d_state=4", "conv"}) {
    Rng rng(3);
    auto mixer = make_mixer(parse_mixer_spec(spec), 8, rng);
    // At init the outputs are ~1e-4: jitter every parameter so that they are O(1).
    mixer->visit("", [&](const std::string&, Tensor& p) { p = add(p, Tensor::uniform(p.shape(), rng, -0.5, 0.5)); });
    Tensor x = Tensor::randn({2, 6, 8}, rng);
    ForwardContext ctx;
    ctx.active = Tensor::from_vector<float>({1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1}, {2, 6});
    NoGradGuard no_grad;
    EXPECT_EQ(mixer->skips_halted_tokens(), spec.find("conv_kernel=1") != std::string::npos ||
                                                spec.rfind("gated_rnn", 0) == 0)
        << spec;
    Tensor masked = avit_mix(*mixer, x, ctx);
    Tensor dense = mixer->forward(x, {}, nullptr);
    const std::vector<std::vector<int64_t>> kept = {{0, 2, 3, 5}, {0, 1, 4, 5}};
    for (int64_t b = 0; b < 2; ++b) {
      Tensor index = Tensor::from_vector(kept[b], {4});
      Tensor alone = mixer->forward(index_select(narrow(x, 0, b, 1), 1, index), {}, nullptr);
      Tensor at_kept = index_select(narrow(masked, 0, b, 1), 1, index);
      expect_close(at_kept, alone, 1e-5);
      EXPECT_GT(max_abs_difference(index_select(narrow(dense, 0, b, 1), 1, index), alone), 1e-4)
          << spec << ": the mask changes nothing";
    }
  }
}

// ------------------------------------------------------------------ the model

VitConfig tiny_avit_config() {
  VitConfig c;
  c.img_size = 8;
  c.patch_size = 2;  // 16 patches + class token
  c.embed_dim = 16;
  c.depth = 4;
  c.num_heads = 2;
  c.mlp_hidden = 32;
  c.num_classes = 5;
  // Scores around 0.3-0.6 for this random model: tokens halt at every depth.
  c.halting = HaltingConfig{1.0, -0.5, 0.01};
  return c;
}

// The class token gets a large first channel so that, through the residual
// stream, its state differs visibly from the patches (random init keeps it ~0).
std::unique_ptr<VisionTransformer> tiny_avit(uint64_t seed, const VitConfig& config = tiny_avit_config()) {
  auto model = std::make_unique<VisionTransformer>(config, seed);
  Rng rng(seed + 100);
  NoGradGuard no_grad;
  copy_into(model->cls_token, Tensor::randn(model->cls_token.shape(), rng));
  copy_into(model->pos_embed, Tensor::randn(model->pos_embed.shape(), rng, DType::F32, 0.5));
  return model;
}

// tiny_avit(3, config) whose blocks other than attention get their mixers'
// parameters jittered to O(1) (at init their outputs are ~1e-4), block by
// block, from `rng`.
std::unique_ptr<VisionTransformer> tiny_hybrid_avit(const VitConfig& config, Rng& rng) {
  auto model = tiny_avit(3, config);
  NoGradGuard no_grad;
  for (Block& block : model->blocks) {
    if (block.mixer->kind() == "attention") continue;
    block.mixer->visit("", [&](const std::string&, Tensor& p) {
      copy_into(p, add(p, Tensor::uniform(p.shape(), rng, -0.5, 0.5)));
    });
  }
  return model;
}

// The masked path (training) and the compacted one (inference) give the same
// logits, for the whole batch and for each image alone.
void expect_paths_agree(VisionTransformer& model, const Tensor& images) {
  NoGradGuard no_grad;
  HaltingTrace trace;
  Tensor masked = avit_forward(model, images, {}, &trace);
  const int64_t batch = images.size(0), tokens = model.config.num_tokens();
  const std::vector<double> retention = layer_retention(trace);
  ASSERT_LT(retention[2], 1.0) << "no token halted before the last layer";
  ASSERT_GT(retention[3], 1.0 / tokens) << "only the class token reached the last layer";
  // Images halt differently, so the batch is padded.
  const std::vector<double> depths = halting_depths(trace).to_doubles();
  EXPECT_NE(std::vector<double>(depths.begin(), depths.begin() + tokens),
            std::vector<double>(depths.begin() + tokens, depths.begin() + 2 * tokens));

  // Halted tokens removed as soon as any are known (the CPU's default), or
  // never unless a mixer needs them gone: carried, masked, to the end.
  for (const int64_t min_halted : {int64_t{1}, batch * tokens}) {
    for (CompactionSync sync : {CompactionSync::last_block, CompactionSync::block_before_last}) {
      SCOPED_TRACE(fmt::format("{}, at least {} halted tokens per compaction",
                               sync == CompactionSync::last_block ? "the last block's flags"
                                                                  : "the flags of the block before last",
                               min_halted));
      CompactTrace trace;
      expect_close(avit_forward_compact(model, images, &trace, {sync, min_halted}), masked, 1e-5);
      // The same logits without a trace, which skips the downloads no compaction reads.
      expect_close(avit_forward_compact(model, images, nullptr, {sync, min_halted}), masked, 1e-5);
      ASSERT_EQ(trace.active.size(), static_cast<size_t>(model.config.depth));
      for (int64_t l = 0; l < model.config.depth; ++l) {
        EXPECT_NEAR(trace.active[l], retention[l] * batch * tokens, 1e-3) << "layer " << l;
      }
      for (int64_t b = 0; b < batch; ++b) {
        expect_close(avit_forward_compact(model, narrow(images, 0, b, 1), nullptr, {sync, min_halted}),
                     narrow(masked, 0, b, 1), 1e-5);
      }
    }
  }
  // Halting changes the result: the dense forward differs.
  EXPECT_GT(max_abs_difference(model.forward(images), masked), 1e-4);
}

// The tokens each block runs on follow CompactionPolicy: the halted tokens
// known from the flags that the timing reads (the last block's on the CPU's
// timing, the block before last's on the GPU's) are removed once at least
// min_halted and an eighth of those present have halted, and never when
// min_halted is every token. Traced
// without counting the active tokens, so that only the flags the schedule
// asks for come home, as in plain inference.
TEST(Avit, CompactionsFollowThePolicy) {
  auto model = tiny_avit(3);
  Rng rng(4);
  NoGradGuard no_grad;
  const Tensor images = Tensor::randn({6, 3, 8, 8}, rng);
  auto present = [&](CompactionSync sync, int64_t min_halted) {
    CompactTrace trace;
    trace.count_active = false;
    avit_forward_compact(*model, images, &trace, {sync, min_halted});
    EXPECT_TRUE(trace.active.empty());
    return trace.present;
  };
  CompactTrace counted;
  avit_forward_compact(*model, images, &counted, {CompactionSync::last_block, 1});
  const std::vector<int64_t>& active = counted.active;
  const int64_t all = 6 * 17;
  ASSERT_TRUE(active[1] == all && active[2] < all && active[3] < active[2]) << "tokens halt after blocks 1 and 2";
  EXPECT_EQ(counted.present, active);
  EXPECT_EQ(present(CompactionSync::last_block, 1), active);
  EXPECT_EQ(present(CompactionSync::block_before_last, 1), (std::vector<int64_t>{all, all, all, active[2]}));
  // More than had halted after block 1, fewer than after block 2.
  const int64_t between = all - (active[2] + active[3]) / 2;
  EXPECT_EQ(present(CompactionSync::last_block, between), (std::vector<int64_t>{all, all, all, active[3]}));
  for (CompactionSync sync : {CompactionSync::last_block, CompactionSync::block_before_last}) {
    EXPECT_EQ(present(sync, all), std::vector<int64_t>(4, all));
  }
}

TEST(Avit, MaskedAndCompactedLogitsAgree) {
  auto model = tiny_avit(3);
  Rng rng(4);
  expect_paths_agree(*model, Tensor::randn({6, 3, 8, 8}, rng));
}

// Random tiny hybrids (depth 2 to 8, each block's mixer drawn, 1 to 6 images,
// tokens halting sooner or later) under both timings and three thresholds:
// the compacted logits are the masked path's with a trace and without one
// (then only the flags a compaction reads are downloaded), and the tokens
// each block runs on do not depend on whether the active ones are counted.
TEST(Avit, RandomHybridsAgreeUnderEveryPolicy) {
  const std::vector<std::string> kinds = {"attention", "conv", "mamba:d_state=4", "gated_rnn:width=8", "mlp:width=8",
                                          "identity"};
  Rng draws(21);
  for (int trial = 0; trial < 12; ++trial) {
    VitConfig config = tiny_avit_config();
    config.depth = 2 + draws.integer(7);
    config.mixers.clear();
    for (int64_t l = 0; l < config.depth; ++l) config.mixers.push_back(kinds[draws.integer(kinds.size())]);
    config.halting = HaltingConfig{1.0, -0.3 - 0.7 * draws.uniform(), 0.01};
    const int64_t batch = 1 + draws.integer(6);
    Rng rng(100 + trial);
    auto model = tiny_hybrid_avit(config, rng);
    NoGradGuard no_grad;
    const Tensor images = Tensor::randn({batch, 3, 8, 8}, rng);
    const Tensor masked = avit_forward(*model, images);
    for (CompactionSync sync : {CompactionSync::last_block, CompactionSync::block_before_last}) {
      for (const int64_t min_halted : {int64_t{1}, int64_t{5}, batch * 17}) {
        SCOPED_TRACE(fmt::format("trial {}: {} ({} images), sync {}, min_halted {}", trial,
                                 fmt::join(config.mixers, " "), batch, static_cast<int>(sync), min_halted));
        CompactTrace counted, uncounted;
        uncounted.count_active = false;
        expect_close(avit_forward_compact(*model, images, &counted, {sync, min_halted}), masked, 1e-5);
        expect_close(avit_forward_compact(*model, images, &uncounted, {sync, min_halted}), masked, 1e-5);
        expect_close(avit_forward_compact(*model, images, nullptr, {sync, min_halted}), masked, 1e-5);
        EXPECT_EQ(counted.present, uncounted.present);
      }
    }
  }
}

// Mixers that read their neighbours by position (the conv mixer, mamba's conv)
// see the kept tokens side by side in both paths.
TEST(Avit, MaskedAndCompactedLogitsAgreeWithSequentialMixers) {
  VitConfig config = tiny_avit_config();
  config.mixers = {"attention", "conv", "mamba:d_state=4", "gated_rnn:width=8"};
  Rng rng(4);
  auto model = tiny_hybrid_avit(config, rng);
  expect_paths_agree(*model, Tensor::randn({6, 3, 8, 8}, rng));
}

// Few tokens halt per block here (scores around 0.1): the compacted path first
// carries them, masked (fewer than an eighth of the tokens present), before it
// removes them, and a conv block comes after blocks that carried some.
TEST(Avit, MaskedAndCompactedLogitsAgreeWhileCarryingHaltedTokens) {
  VitConfig config = tiny_avit_config();
  config.depth = 8;
  config.halting = HaltingConfig{1.0, -1.0, 0.01};
  config.mixers = {"attention", "attention", "attention", "conv",
                   "attention", "gated_rnn:width=8", "attention", "attention"};
  Rng rng(4);
  auto model = tiny_hybrid_avit(config, rng);
  expect_paths_agree(*model, Tensor::randn({6, 3, 8, 8}, rng));
}

// The compacted path pads each image's tokens to the batch's largest count
// around the mixer. The padding must read as nothing: mamba's reverse conv and
// the 'same' conv mixer read the tokens after the last kept one, which alone in
// a batch are the conv's zero padding. So an image's logits must not depend on
// the other images of its batch.
TEST(Avit, CompactedLogitsDoNotDependOnTheBatch) {
  VitConfig config = tiny_avit_config();
  config.mixers = {"attention", "attention", "mamba:d_state=4", "conv"};
  Rng rng(5);
  auto model = tiny_hybrid_avit(config, rng);
  NoGradGuard no_grad;
  Tensor images = Tensor::randn({6, 3, 8, 8}, rng);
  for (CompactionSync sync : {CompactionSync::last_block, CompactionSync::block_before_last}) {
    CompactTrace trace;
    Tensor batched = avit_forward_compact(*model, images, &trace, {sync});
    ASSERT_LT(trace.active[2], 6 * 17) << "no token halted before the mixers: nothing is padded";
    for (int64_t b = 0; b < 6; ++b) {
      expect_close(narrow(batched, 0, b, 1), avit_forward_compact(*model, narrow(images, 0, b, 1), nullptr, {sync}),
                   1e-6);
    }
  }
}

// A tiny A-ViT with these mixers (tiny_hybrid_avit) and `count` random images, drawn from `seed`.
std::pair<std::unique_ptr<VisionTransformer>, Tensor> gpu_case(const std::vector<std::string>& mixers, uint64_t seed,
                                                               int64_t count) {
  VitConfig config = tiny_avit_config();
  config.mixers = mixers;
  Rng rng(seed);
  auto model = tiny_hybrid_avit(config, rng);
  return {std::move(model), Tensor::randn({count, 3, 8, 8}, rng)};
}

// The compacted path on a GPU (model moved there) against the CPU's, the
// logits and the tokens counted per layer, under both timings and both
// policies: halted tokens removed when they carry enough work (by default more
// than a tiny model ever has, so a GPU carries them, masked, unless a mixer
// needs them gone) or as soon as any are known, as the CPU does. Returns the
// CPU's logits.
Tensor expect_gpu_compacted_path_matches_cpu(VisionTransformer& model, const Tensor& images) {
  CompactTrace cpu;
  const Tensor compact = avit_forward_compact(model, images, &cpu);
  model.to(Device::cuda());
  const Tensor gpu_images = images.to(Device::cuda());
  for (CompactionSync sync : {CompactionSync::last_block, CompactionSync::block_before_last}) {
    for (int64_t min_halted : {0, 1}) {
      SCOPED_TRACE(fmt::format("sync {}, min_halted {}", static_cast<int>(sync), min_halted));
      CompactTrace gpu;
      const Tensor gpu_compact = avit_forward_compact(model, gpu_images, &gpu, {sync, min_halted});
      EXPECT_TRUE(gpu_compact.device().is_cuda());
      EXPECT_EQ(gpu.active, cpu.active);
      // The CPU's policy (the newest flags, any halted token removed): the same compactions.
      if (sync == CompactionSync::last_block && min_halted == 1) {
        EXPECT_EQ(gpu.present, cpu.present);
      }
      expect_close(gpu_compact.to(Device::cpu()), compact, 1e-4);
      // The same logits without a trace, which skips the downloads no compaction reads.
      expect_close(avit_forward_compact(model, gpu_images, nullptr, {sync, min_halted}).to(Device::cpu()), compact,
                   1e-4);
    }
  }
  return compact;
}

// On a GPU both paths give the CPU's logits and drop the same tokens: the
// compacted path's index lists are built on the host and uploaded without
// waiting, from halting flags downloaded without waiting (read one block
// later, or at once), the masked path's kept-first layout likewise. Skips
// without a GPU.
TEST(CudaAvit, BothPathsMatchTheCpuWithSequentialMixers) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  NoGradGuard no_grad;
  auto [model, images] = gpu_case({"attention", "conv", "mamba:d_state=4", "gated_rnn:width=8"}, 7, 6);
  const Tensor masked = avit_forward(*model, images);
  const Tensor compact = expect_gpu_compacted_path_matches_cpu(*model, images);
  const Tensor gpu_images = images.to(Device::cuda());
  expect_close(avit_forward(*model, gpu_images).to(Device::cpu()), masked, 1e-4);
  // With bfloat16 GEMMs, where the block hands LN1's output to attention's
  // projection as its bfloat16 operand: the same logits to bfloat16's rounding.
  GemmPrecisionGuard bf16(GemmPrecision::BFloat16);
  for (CompactionSync sync : {CompactionSync::last_block, CompactionSync::block_before_last}) {
    const Tensor bf16_compact = avit_forward_compact(*model, gpu_images, nullptr, {sync}).to(Device::cpu());
    const double scale = max_abs_difference(compact, Tensor::zeros(compact.shape()));
    EXPECT_LT(max_abs_difference(bf16_compact, compact), 0.05 * scale);
  }
}

// Attention and gated_rnn blocks only, 16 images: with the default policy a
// GPU never compacts here, and with min_halted 1 it compacts as the CPU does
// (enough tokens halt by block 1). Skips without a GPU.
TEST(CudaAvit, CarryingOrCompactingGivesTheCpuLogits) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  NoGradGuard no_grad;
  auto [model, images] = gpu_case({"attention", "gated_rnn:width=8", "attention", "gated_rnn:width=8"}, 8, 16);
  CompactTrace cpu;
  avit_forward_compact(*model, images, &cpu);
  ASSERT_LE(8 * cpu.active[2], 7 * 16 * 17) << "fewer than an eighth of the tokens halted by block 1: no compaction";
  expect_gpu_compacted_path_matches_cpu(*model, images);
}

TEST(Avit, GradientsFlowThroughTheHaltingPathInFloat64) {
  auto model = tiny_avit(5);
  model->visit([&](const std::string&, Tensor& p) { p = p.to(DType::F64).detach(); });
  Rng rng(6);
  Tensor images = Tensor::randn({2, 3, 8, 8}, rng, DType::F64);
  const std::vector<double> prior = gaussian_depth_prior(4, 2.0, 1.0);
  // Block 2's MLP bias (its channel 0 sets that layer's scores) and block 1's
  // LN1 bias (attention inputs of a layer where tokens are masked).
  Tensor& fc2_bias = model->blocks[2].mlp.fc2.bias;
  Tensor& norm_bias = model->blocks[1].norm1.bias;
  fc2_bias.set_requires_grad(true);
  norm_bias.set_requires_grad(true);
  HaltingTrace probe;
  {
    NoGradGuard no_grad;
    avit_forward(*model, images, {}, &probe);
  }
  ASSERT_LT(layer_retention(probe)[2], 1.0);
  auto loss = [&](const std::vector<Tensor>&) {
    HaltingTrace trace;
    Tensor logits = avit_forward(*model, images, {}, &trace);
    return add(add(mean(mul(logits, logits)), ponder_loss(trace)), prior_kl(halting_distribution(trace), prior));
  };
  expect_gradients_match(loss, {fc2_bias, norm_bias}, 1e-6, 1e-5);
}

TEST(Avit, CheckpointKeepsHaltingSettings) {
  auto model = tiny_avit(7);
  const std::string dir = testing::scratch_path("engine_avit_round_trip");
  std::filesystem::remove_all(dir);
  save_vit(*model, dir);
  auto loaded = load_vit(dir);
  ASSERT_TRUE(loaded->config.halting.has_value());
  EXPECT_EQ(loaded->config.halting->beta, -0.5);
  Rng rng(8);
  Tensor images = Tensor::randn({2, 3, 8, 8}, rng);
  NoGradGuard no_grad;
  expect_close(avit_forward_compact(*loaded, images), avit_forward(*model, images), 1e-5);
  // A bad value is named.
  std::ifstream in(dir + "/config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  config["engine"]["halting"]["eps"] = 2.0;
  std::ofstream(dir + "/config.json") << config.dump();
  EXPECT_ERROR(load_vit(dir), "halting eps must be in (0, 1), got 2");
  config["engine"]["halting"] = {{"gama", 1.0}};
  std::ofstream(dir + "/config.json") << config.dump();
  EXPECT_ERROR(load_vit(dir), "unknown key engine.halting.gama");
  std::filesystem::remove_all(dir);
}

TEST(Avit, SparsityAnalysisCountsRetainedTokensOnly) {
  auto model = tiny_avit(3);
  Rng rng(4);
  Tensor images = Tensor::randn({6, 3, 8, 8}, rng);
  SparsityAnalysis analysis(*model, /*heatmap_images=*/1);
  analysis.add_batch(images);
  HaltingTrace trace;
  {
    NoGradGuard no_grad;
    avit_forward(*model, images, {}, &trace);
  }
  const std::vector<double> retention = layer_retention(trace);
  // Rows of kept queries only, each over its image's kept keys.
  for (int64_t l = 0; l < 4; ++l) {
    EXPECT_EQ(analysis.stats().layer(l).rows, std::llround(retention[l] * 6 * 17) * 2) << "layer " << l;
  }
  EXPECT_EQ(analysis.stats().layer(0).tokens, 17.0);
  EXPECT_LT(analysis.stats().layer(3).tokens, 17.0);
}

TEST(Avit, PlainModelIsRejected) {
  VitConfig c = tiny_avit_config();
  c.halting.reset();
  VisionTransformer plain(c, 1);
  Rng rng(1);
  EXPECT_ERROR(avit_forward(plain, Tensor::randn({1, 3, 8, 8}, rng)), "no halting settings");
}

// ------------------------------------------------------------------ ./train_avit

std::vector<double> logged(const std::string& metrics_path, const char* key) {
  std::vector<double> values;
  std::ifstream in(metrics_path);
  for (std::string line; std::getline(in, line);) {
    nlohmann::json record = nlohmann::json::parse(line);
    if (record["phase"] == "train") values.push_back(record[key]);
  }
  return values;
}

// One batch of training from `teacher` on the small image folder, timed at batch 1, without depth maps.
AvitSettings tiny_settings(const std::string& teacher, const std::string& out_dir) {
  AvitSettings s;
  s.teacher = teacher;
  s.data = testing::make_image_folder(testing::scratch_path("engine_avit_images"));
  s.train_subdir = "train";
  s.test_subdir = "test";
  s.batch_size = 8;
  s.workers = 1;
  s.target_depth = 2.0;  // of the fixture's 3 blocks
  s.budget_images = 8;
  s.latency_repeats = 1;
  s.latency_batches = {1};
  s.depth_maps = 0;
  s.out_dir = out_dir;
  s.overwrite = true;
  return s;
}

TEST(AvitTrain, EndToEndLowersPonderAndRetention) {
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  REQUIRE_SHARED("data/imagenet-sample.tar");
  namespace fs = std::filesystem;
  AvitSettings s = tiny_settings(testing::shared_path("fixtures/timm_vit_tiny.safetensors"),
                                 testing::scratch_path("engine_avit_out"));
  s.halting = HaltingConfig{1.0, -1.0, 0.01};
  s.alpha_p = 0.1;
  s.alpha_d = 0.01;
  s.target_depth = 1.0;
  s.budget_images = 160;
  s.lr = 3e-3;
  s.latency_batches = {1, 4};
  s.depth_maps = 2;
  nlohmann::json results = run_avit(s);

  const std::vector<double> ponder = logged(s.out_dir + "/metrics.jsonl", "ponder");
  const std::vector<double> kept = logged(s.out_dir + "/metrics.jsonl", "mean_retention");
  // The logged loss is the objective with each weight on its own term (train/avit.h).
  const std::vector<double> loss = logged(s.out_dir + "/metrics.jsonl", "loss");
  const std::vector<double> ce = logged(s.out_dir + "/metrics.jsonl", "ce");
  const std::vector<double> prior = logged(s.out_dir + "/metrics.jsonl", "prior_kl");
  const std::vector<double> distill = logged(s.out_dir + "/metrics.jsonl", "distill_kl");  // kl_weight 1 by default
  ASSERT_EQ(distill.size(), loss.size());
  for (size_t i = 0; i < loss.size(); ++i) {
    const double objective = ce[i] + s.alpha_p * ponder[i] + s.alpha_d * prior[i] + s.kl_weight * distill[i];
    EXPECT_NEAR(loss[i], objective, 1e-5 * std::max(1.0, loss[i]));
  }
  ASSERT_GE(ponder.size(), 2u);
  EXPECT_LT(ponder.back(), ponder.front() - 0.1) << "training did not lower the ponder loss";
  EXPECT_LT(kept.back(), kept.front()) << "training did not lower the retention";
  const auto& avit = results["avit"];
  ASSERT_EQ(avit["retention"].size(), 3u);
  // The same parameters; fewer GEMM FLOPs per image with tokens dropped.
  EXPECT_EQ(avit["params"], results["teacher"]["params"]);
  EXPECT_GT(avit["gflops"].get<double>(), 0.0);
  EXPECT_LT(avit["gflops"].get<double>(), results["teacher"]["gflops"].get<double>());
  EXPECT_EQ(avit["retention"][0].get<double>(), 1.0);
  EXPECT_LT(avit["mean_retention"].get<double>(), 1.0);
  EXPECT_EQ(results["teacher"]["mean_retention"].get<double>(), 1.0);  // a dense teacher
  EXPECT_TRUE(avit["latency_ms"].contains("b4"));
  EXPECT_TRUE(results["speedup"].contains("b1"));
  // The maps show images spread over the test set: here one of each class (the folder lists them class by class).
  ASSERT_EQ(results["depth_maps"].size(), 2u);
  for (const auto& map : results["depth_maps"]) EXPECT_TRUE(fs::exists(s.out_dir + "/" + map["file"].get<std::string>()));
  EXPECT_EQ(results["depth_maps"][0]["image"].get<std::string>().rfind("even/", 0), 0u);
  EXPECT_EQ(results["depth_maps"][1]["image"].get<std::string>().rfind("odd/", 0), 0u);
  auto saved = load_vit(s.out_dir + "/avit");
  ASSERT_TRUE(saved->config.halting.has_value());
  EXPECT_EQ(saved->config.halting->beta, -1.0);
}

// The depth prior the training pulls towards is centred on target_depth
// (counted from 1). Scores of sigmoid(-40) leave every token running to the
// forced last layer and make the halting distribution uniform (each layer's
// mass is the 1e-12 floor), so the logged prior KL is KL(prior || uniform):
// here a prior centred on layer 2 of 3, worked out from its definition.
TEST(AvitTrain, PriorKlIsTakenAgainstTheTargetDepthPrior) {
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  REQUIRE_SHARED("data/imagenet-sample.tar");
  AvitSettings s = tiny_settings(testing::shared_path("fixtures/timm_vit_tiny.safetensors"),
                                 testing::scratch_path("engine_avit_prior"));
  s.halting = HaltingConfig{1e-6, -40.0, 0.01};
  s.target_depth = 2.0;
  s.prior_std = 0.8;
  run_avit(s);
  std::vector<double> prior;
  double total = 0;
  for (int layer = 1; layer <= 3; ++layer) {
    prior.push_back(std::exp(-0.5 * std::pow((layer - 2.0) / 0.8, 2)));
    total += prior.back();
  }
  double kl = 0;
  for (double p : prior) kl += p / total * std::log(p / total * 3.0);
  const std::vector<double> logged_kl = logged(s.out_dir + "/metrics.jsonl", "prior_kl");
  ASSERT_EQ(logged_kl.size(), 1u);
  EXPECT_NEAR(logged_kl[0], kl, 1e-4);
  // Every token passes all 3 layers with a remainder of 1.
  EXPECT_NEAR(logged(s.out_dir + "/metrics.jsonl", "ponder")[0], 4.0, 1e-6);
  EXPECT_NEAR(logged(s.out_dir + "/metrics.jsonl", "mean_retention")[0], 1.0, 1e-12);
}

// The distillation term is taken at the configured temperature: the same first
// batch through the same halting model gives the same CE and another KL at
// another temperature (a KL at T = 1 whatever the setting went unnoticed).
// The same runs check a depth map's contents (two tests would take two more runs).
TEST(AvitTrain, DistillationKlUsesTheTemperatureAndDepthMapsShowThePatches) {
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  REQUIRE_SHARED("data/imagenet-sample.tar");
  AvitSettings s = tiny_settings(testing::shared_path("fixtures/timm_vit_tiny.safetensors"), "");
  s.halting = HaltingConfig{1.0, 0.5, 0.01};  // tokens halt: the logits move off the dense teacher's
  std::vector<double> ce, kl;
  for (double temperature : {1.0, 4.0}) {
    s.out_dir = testing::scratch_path(fmt::format("engine_avit_t{}", temperature));
    s.temperature = temperature;
    s.depth_maps = temperature == 1.0 ? 1 : 0;
    run_avit(s);
    ce.push_back(logged(s.out_dir + "/metrics.jsonl", "ce").at(0));
    kl.push_back(logged(s.out_dir + "/metrics.jsonl", "distill_kl").at(0));
  }
  EXPECT_EQ(ce[0], ce[1]);
  EXPECT_GT(kl[0], 0.0);
  EXPECT_GT(std::abs(kl[0] - kl[1]), 0.01 * std::max(kl[0], kl[1])) << kl[0] << " at T = 1, " << kl[1] << " at T = 4";

  // The first run's depth map (of the test set's first image) shows each
  // patch's depth, the class token's left out: rendered here from the saved
  // A-ViT's halting depths at tokens 1..N - 1.
  const std::string out = testing::scratch_path("engine_avit_t1");
  auto model = load_vit(out + "/avit");
  const auto test_set = data::open_dataset(s.data, s.test_subdir);
  const data::Subset first(*test_set, data::evenly_spaced_items(test_set->size(), 1));
  const Tensor image = first_images(first, model->config.preprocess, 1, Device::cpu());
  HaltingTrace trace;
  {
    NoGradGuard no_grad;
    avit_forward(*model, image, {}, &trace);
  }
  const std::vector<double> depths = halting_depths(trace).to_doubles();
  ASSERT_EQ(depths.size(), 65u);
  const std::vector<float> map(depths.begin() + 1, depths.end());
  ASSERT_NE(*std::min_element(map.begin(), map.end()), *std::max_element(map.begin(), map.end()))
      << "the patches need different depths";
  const data::Image expected =
      image_with_maps(to_rgb_image(image, 0, model->config.preprocess), {map}, model->config.grid(), 3.0);
  const data::Image written = data::decode_image(out + "/depth_map_img0.png");
  ASSERT_EQ(written.height, expected.height);
  ASSERT_EQ(written.width, expected.width);
  EXPECT_TRUE(written.pixels == expected.pixels) << "the depth map is not the patches' depths";
}

// A teacher that is itself an A-ViT is evaluated as one: its row reports the
// share of tokens it keeps, not a dense model's 100%.
TEST(AvitTrain, HaltingTeacherReportsItsRetention) {
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  REQUIRE_SHARED("data/imagenet-sample.tar");
  const std::string teacher = testing::save_avit_teacher(testing::scratch_path("engine_avit_halting_teacher"));
  nlohmann::json results = run_avit(tiny_settings(teacher, testing::scratch_path("engine_avit_from_avit")));
  EXPECT_LT(results["teacher"]["mean_retention"].get<double>(), 0.95);
  EXPECT_GT(results["teacher"]["mean_retention"].get<double>(), 0.3);
  EXPECT_EQ(results["teacher"]["path"], teacher);
}

// With overwrite on, a teacher saved by an earlier run in the same folder is
// refused, as train_distill refuses it, and stays where it was.
TEST(AvitTrain, TeacherInsideTheOutputsItWouldReplaceIsRefused) {
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  REQUIRE_SHARED("data/imagenet-sample.tar");
  namespace fs = std::filesystem;
  const std::string out = testing::scratch_path("engine_avit_own_teacher");
  fs::remove_all(out);
  const std::string teacher = testing::save_avit_teacher(out + "/avit");
  testing::expect_error_mentioning([&] { run_avit(tiny_settings(teacher, out)); },
                                   {teacher + " is an earlier run's output", "replace before reading it"});
  EXPECT_TRUE(fs::exists(teacher + "/model.safetensors"));
  EXPECT_TRUE(fs::exists(teacher + "/config.json"));
}

// The shipped A-ViT and sweep configs read without an unknown key (tests run from the repository root).
TEST(AvitTrain, ShippedConfigsAreValid) {
  for (const char* path : {"configs/avit_cifar10.ini", "configs/avit_cifar10_gpu.ini"}) {
    Config config = Config::load(path);
    AvitSettings::from_config(config);
    config.check_all_used();
  }
  Config sweep = Config::load("configs/sweep_cifar10_gpu.ini");
  EXPECT_EQ(DistillSettings::from_config(sweep).experiment, "teacher_sparsity_sweep");
  sweep.check_all_used();
}

TEST(AvitTrain, ConfigErrorsNameTheKey) {
  const std::string base = "[teacher]\nmodel = m\n[data]\npath = d\n";
  Config bad_eps = Config::parse(base + "[halting]\neps = 1.5\n", "avit.ini");
  EXPECT_ERROR(AvitSettings::from_config(bad_eps), "avit.ini:6 [halting]: halting eps must be in (0, 1), got 1.5");
  Config overridden_eps = Config::parse(base, "avit.ini");
  overridden_eps.apply_override("halting.eps=0");
  EXPECT_ERROR(AvitSettings::from_config(overridden_eps), "<override> [halting]: halting eps must be in (0, 1), got 0");
  Config bad_gamma = Config::parse(base + "[halting]\ngamma = 0\n", "avit.ini");
  EXPECT_ERROR(AvitSettings::from_config(bad_gamma), "avit.ini:6: [halting] gamma = '0' must be > 0");
  Config bad_std = Config::parse(base + "[halting]\nprior_std = 0\n", "avit.ini");
  EXPECT_ERROR(AvitSettings::from_config(bad_std), "[halting] prior_std = '0' must be > 0");
  Config typo = Config::parse(base + "[halting]\nalpha_q = 1\n", "avit.ini");
  AvitSettings::from_config(typo);
  EXPECT_ERROR(typo.check_all_used(), "alpha_q");
  Config device = Config::parse(base + "[run]\ndevice = gpu\n", "avit.ini");
  EXPECT_ERROR(AvitSettings::from_config(device), "avit.ini:6: [run] device: unknown device 'gpu'");
  // Trained in whole batches: a remainder would go untrained, unrecorded.
  Config budget = Config::parse(base + "[data]\nbatch_size = 32\n[train]\nbudget_images = 95\n", "avit.ini");
  EXPECT_ERROR(AvitSettings::from_config(budget),
               "avit.ini:8: [train] budget_images = 95 is not a whole number of batches ([data] batch_size = 32): "
               "use 64 or 96");
}

// ------------------------------------------------------------------ ./vit_forward

// An A-ViT's traced forward halts tokens: its logits are those of the
// compacted path (./eval_imagenet's), not the dense forward's.
TEST(Avit, TracedForwardRunsWithHalting) {
  VitConfig config = tiny_avit_config();
  config.halting->beta = 0.5;  // most tokens halt early: the logits differ clearly from the dense ones
  auto model = tiny_avit(3, config);
  Rng rng(4);
  const Tensor images = Tensor::randn({3, 3, 8, 8}, rng);
  const NamedTensors outputs = traced_forward(*model, images);
  auto output = [&](const std::string& name) {
    for (const auto& [key, tensor] : outputs)
      if (key == name) return tensor;
    ADD_FAILURE() << "no output " << name;
    return Tensor();
  };
  NoGradGuard no_grad;
  expect_close(output("logits"), avit_forward_compact(*model, images), 1e-5);
  // (The random model's logits are small: 1e-4 is ten times the paths' agreement above.)
  EXPECT_GT(max_abs_difference(output("logits"), model->forward(images)), 1e-4);
  // Tokens halted before the last block keep their state through it.
  const Tensor active = output("blocks.3.active");
  ASSERT_EQ(active.shape(), (Shape{3, 17}));
  const std::vector<double> kept = active.to_doubles();
  const std::vector<double> before = output("blocks.2.out").to_doubles(), after = output("blocks.3.out").to_doubles();
  int halted = 0;
  for (size_t t = 0; t < kept.size(); ++t) {
    if (kept[t] != 0.0) continue;
    ++halted;
    for (size_t d = 0; d < 16; ++d) EXPECT_EQ(after[t * 16 + d], before[t * 16 + d]) << "token " << t;
  }
  EXPECT_GT(halted, 0);
  EXPECT_EQ(output("blocks.3.attn_probs").shape(), (Shape{3, 2, 17, 17}));
  // A dense model's trace is its forward's, with no halting flags.
  model->config.halting.reset();
  const NamedTensors dense = traced_forward(*model, images);
  expect_close(dense.front().second, model->forward(images), 1e-6);
  EXPECT_EQ(dense.size(), 1u + 2 * 4);  // logits, then out and attn_probs per block
}

// The evaluation's retention (RetentionMeter, on the compacted path) is the
// masked path's layer_retention: per layer the share of all B * N tokens,
// class token included, entering it; over two batches of different sizes, the
// token-weighted mean; mean_retention their mean over layers.
TEST(Avit, RetentionMeterCountsWhatTheMaskedPathKeeps) {
  auto model = tiny_avit(3);
  Rng rng(4);
  const Tensor first = Tensor::randn({6, 3, 8, 8}, rng), second = Tensor::randn({2, 3, 8, 8}, rng);
  std::vector<double> expected(4, 0.0);
  for (const Tensor& images : {first, second}) {
    HaltingTrace trace;
    NoGradGuard no_grad;
    avit_forward(*model, images, {}, &trace);
    const std::vector<double> kept = layer_retention(trace);
    for (size_t l = 0; l < 4; ++l) expected[l] += kept[l] * images.size(0) / 8.0;
  }
  ASSERT_LT(expected[3], expected[1]) << "tokens must halt for the check to mean anything";
  RetentionMeter meter(*model);
  const LogitsFn logits = meter.logits();
  logits(first);
  logits(second);
  const std::vector<double> retention = meter.retention();
  ASSERT_EQ(retention.size(), 4u);
  double mean = 0;
  for (size_t l = 0; l < 4; ++l) {
    EXPECT_NEAR(retention[l], expected[l], 1e-6) << "layer " << l;  // (float32 means; a token is 1/136)
    mean += expected[l] / 4;
  }
  EXPECT_NEAR(meter.mean_retention(), mean, 1e-6);
}

}  // namespace
}  // namespace engine

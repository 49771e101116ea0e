// The distillation objective, and ./train_distill's pipeline end to end on a
// tiny teacher (the timm fixture) and a small folder of real images.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "data/archive.h"
#include "data/files.h"
#include "data/image.h"
#include "data/open_dataset.h"
#include "engine/device.h"
#include "engine/ops/ops.h"
#include "models/avit.h"
#include "models/vit_checkpoint.h"
#include "tests/expect_error.h"
#include "tests/gradcheck.h"
#include "tests/image_folder_fixture.h"
#include "tests/shared_data.h"
#include "train/batch_stream.h"
#include "train/distill.h"
#include "train/evaluate.h"

namespace engine {
namespace {

namespace fs = std::filesystem;

void write_text(const fs::path& path, const std::string& text) { std::ofstream(path) << text; }

TEST(OutputFolder, HoldsOneRunAtATimeAndLeavesOtherFilesAlone) {
  const fs::path out = testing::scratch_path("output_folder_rules");
  fs::remove_all(out);
  fs::create_directories(out / "hybrid");
  write_text(out / "hybrid" / "config.json", "{}");
  write_text(out / "metrics.jsonl", "{}\n");
  write_text(out / "depth_map_img3.png", "png");
  write_text(out / "notes.txt", "mine");
  fs::create_directories(out / "hybrid_kept");  // another run's, as its own name says
  const std::vector<std::string> outputs = {"results.json", "metrics.jsonl", "hybrid", "depth_map_img*"};

  // A folder with a run's outputs, even without results.json (another tool's
  // log, or a run stopped early), is not overwritten unasked.
  testing::expect_error_mentioning([&] { prepare_out_dir(out.string(), false, outputs); },
                                   {out.string(), "overwrite"});
  EXPECT_TRUE(fs::exists(out / "metrics.jsonl") && fs::exists(out / "hybrid" / "config.json"));

  // A teacher inside an output that overwriting would remove (it is read again later).
  testing::expect_error_mentioning(
      [&] { prepare_out_dir(out.string(), true, outputs, {(out / "hybrid").string()}); },
      {(out / "hybrid").string(), "replace before reading it"});
  EXPECT_TRUE(fs::exists(out / "hybrid" / "config.json"));

  // Overwriting removes every output of the earlier run at the start, and nothing else.
  prepare_out_dir(out.string(), true, outputs, {(out / "hybrid_kept").string()});
  EXPECT_FALSE(fs::exists(out / "metrics.jsonl"));
  EXPECT_FALSE(fs::exists(out / "hybrid"));
  EXPECT_FALSE(fs::exists(out / "depth_map_img3.png"));
  EXPECT_TRUE(fs::exists(out / "notes.txt"));
  EXPECT_TRUE(fs::exists(out / "hybrid_kept"));
  prepare_out_dir(out.string(), false, outputs);  // now nothing is in the way

  testing::expect_error_mentioning([&] { prepare_out_dir((out / "notes.txt").string(), true, outputs); },
                                   {"notes.txt", "not a folder"});
  testing::expect_error_mentioning([&] { prepare_out_dir("", true, outputs); }, {"[output] dir"});
  fs::remove_all(out);
}

// Every check comes before any removal, whatever order the folder lists its
// entries in: a refused run leaves all of the earlier one.
TEST(OutputFolder, RefusalRemovesNothing) {
  const fs::path out = testing::scratch_path("output_folder_refusal");
  fs::remove_all(out);
  fs::create_directories(out / "hybrid");
  std::vector<fs::path> earlier = {out / "hybrid" / "config.json", out / "metrics.jsonl", out / "results.json"};
  for (int i = 0; i < 16; ++i) earlier.push_back(out / fmt::format("depth_map_img{}.png", i));
  for (const fs::path& file : earlier) write_text(file, file.filename().string());
  const std::vector<std::string> outputs = {"results.json", "metrics.jsonl", "hybrid", "depth_map_img*"};

  testing::expect_error_mentioning(
      [&] { prepare_out_dir(out.string(), true, outputs, {(out / "hybrid").string()}); },
      {(out / "hybrid").string(), "replace before reading it"});
  for (const fs::path& file : earlier) EXPECT_TRUE(fs::exists(file)) << file << " was removed";
  fs::remove_all(out);
}

TEST(Distill, LossIsVarianceNormalisedMse) {
  Tensor target = Tensor::from_vector<double>({1, 3, 5, 7}, {1, 2, 2});  // variance 5
  Tensor prediction = Tensor::from_vector<double>({2, 3, 5, 5}, {1, 2, 2});
  // MSE = (1 + 0 + 0 + 4) / 4 = 1.25; / 5 = 0.25.
  EXPECT_NEAR(distill_loss(prediction, target, 0.0).item<double>(), 0.25, 1e-12);
  // Identical tensors: zero MSE and cosine 1, so zero with the cosine term too.
  EXPECT_NEAR(distill_loss(target, target, 0.5).item<double>(), 0.0, 1e-9);
  Rng rng(3);
  Tensor t = Tensor::randn({2, 3, 4}, rng, DType::F64);
  Tensor p = testing::random_leaf({2, 3, 4}, rng);
  testing::expect_gradients_match([&](const auto& in) { return distill_loss(in[0], t, 0.3); }, {p});
}

TEST(Distill, KeepMaskRestrictsTheLossToRetainedTokens) {
  Rng rng(11);
  Tensor target = Tensor::randn({2, 5, 4}, rng, DType::F64);
  Tensor prediction = Tensor::randn({2, 5, 4}, rng, DType::F64);
  Tensor keep = Tensor::from_vector<double>({1, 0, 1, 1, 0, 1, 1, 0, 0, 1}, {2, 5});
  const double masked = distill_loss(prediction, target, 0.3, keep).item<double>();
  // Equal to the loss over the kept tokens gathered into one sequence.
  Tensor rows = Tensor::from_vector<int64_t>({0, 2, 3, 5, 6, 9}, {6});
  auto kept = [&](const Tensor& x) { return reshape(index_select(reshape(x, {10, 4}), 0, rows), {1, 6, 4}); };
  EXPECT_NEAR(masked, distill_loss(kept(prediction), kept(target), 0.3).item<double>(), 1e-12);
  // Halted tokens do not count: changing them changes nothing, while the unmasked loss moves.
  Tensor changed = prediction + (1.0 - unsqueeze(keep, -1)) * 5.0;
  EXPECT_NEAR(distill_loss(changed, target, 0.3, keep).item<double>(), masked, 1e-12);
  const double unmasked_change =
      distill_loss(changed, target, 0.3).item<double>() - distill_loss(prediction, target, 0.3).item<double>();
  EXPECT_GT(std::abs(unmasked_change), 0.1);
  Tensor leaf = testing::random_leaf({2, 5, 4}, rng);
  testing::expect_gradients_match([&](const auto& in) { return distill_loss(in[0], target, 0.3, keep); }, {leaf});
}

// A student's loss on an A-ViT teacher's block: per image the student run on
// the kept tokens alone (the halted ones absent, not merely unscored) and the
// loss over the kept tokens only, gathered into one sequence here. Students
// jittered so that their outputs are O(1), one scan that skips halted tokens
// itself and one conv over tokens.
TEST(Distill, StudentLossOfAnAvitTeacherSeesAndScoresTheRunningTokensOnly) {
  for (const std::string spec : {"gated_rnn:width=8", "conv"}) {
    Rng rng(7);
    auto student = make_mixer(parse_mixer_spec(spec), 8, rng);
    student->visit("", [&](const std::string&, Tensor& p) { p = add(p, Tensor::uniform(p.shape(), rng, -0.5, 0.5)); });
    BlockTrace block;
    block.mixer_input = Tensor::randn({2, 6, 8}, rng);
    block.mixer_output = Tensor::randn({2, 6, 8}, rng);
    const Tensor active = Tensor::from_vector<float>({1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1}, {2, 6});
    const std::vector<std::vector<int64_t>> kept = {{0, 2, 3, 5}, {0, 1, 4, 5}};
    NoGradGuard no_grad;
    std::vector<Tensor> predictions, targets;
    for (int64_t b = 0; b < 2; ++b) {
      const Tensor index = Tensor::from_vector(kept[b], {4});
      predictions.push_back(student->forward(index_select(narrow(block.mixer_input, 0, b, 1), 1, index), {}, nullptr));
      targets.push_back(index_select(narrow(block.mixer_output, 0, b, 1), 1, index));
    }
    const double expected = distill_loss(concat(predictions, 1), concat(targets, 1), 0.3).item<double>();
    EXPECT_NEAR(student_loss(*student, block, 0.3, active).item<double>(), expected, 1e-5 * expected) << spec;
    // Without a mask: the student on every token, every token scored.
    EXPECT_NEAR(student_loss(*student, block, 0.3).item<double>(),
                distill_loss(student->forward(block.mixer_input, {}, nullptr), block.mixer_output, 0.3).item<double>(),
                1e-6)
        << spec;
  }
}

DistillSettings tiny_settings(const std::string& images, const std::string& out) {
  DistillSettings s;
  s.teacher = testing::shared_path("fixtures/timm_vit_tiny.safetensors");
  s.data = images;
  s.train_subdir = "train";
  s.test_subdir = "test";
  s.batch_size = 8;
  s.workers = 1;
  s.sparsity_images = 16;
  s.mixer = "gated_rnn:width=16";
  s.budget_images = 160;
  s.lr = 3e-3;
  s.latency_repeats = 1;
  s.latency_batches = {1};
  s.out_dir = out;
  s.overwrite = true;
  return s;
}

std::vector<double> distill_losses(const std::string& metrics_path) {
  std::vector<double> losses;
  std::ifstream in(metrics_path);
  for (std::string line; std::getline(in, line);) {
    nlohmann::json record = nlohmann::json::parse(line);
    if (record["phase"] == "distill") losses.push_back(record["loss"]);
  }
  return losses;
}

TEST(Distill, EndToEndReducesTheLossAndWritesAHybrid) {
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  REQUIRE_SHARED("data/imagenet-sample.tar");
  const std::string images = testing::make_image_folder(testing::scratch_path("engine_distill_img"));
  const std::string out = testing::scratch_path("engine_distill_out");
  DistillSettings s = tiny_settings(images, out);
  s.layers = "sparsest:2";
  s.finetune_images = 16;
  nlohmann::json results = run_distill(s);

  std::vector<double> losses = distill_losses(out + "/metrics.jsonl");
  ASSERT_GE(losses.size(), 2u);
  EXPECT_LT(losses.back(), 0.7 * losses.front()) << "distillation did not reduce the loss";
  EXPECT_EQ(results["replaced_layers"].size(), 2u);
  EXPECT_LT(results["student"]["params"].get<int64_t>(), results["teacher"]["params"].get<int64_t>());
  // Narrow recurrences in place of attention (whose q k^T and p v count too): fewer GEMM FLOPs.
  EXPECT_GT(results["student"]["gflops"].get<double>(), 0.0);
  EXPECT_LT(results["student"]["gflops"].get<double>(), results["teacher"]["gflops"].get<double>());
  EXPECT_TRUE(results["student"].contains("latency_ms_b1"));
  // The saved hybrid loads back with its mixers, each in the block it replaced.
  auto hybrid = load_vit(out + "/hybrid");
  const std::vector<int64_t> replaced = results["replaced_layers"];
  ASSERT_EQ(hybrid->config.mixers.size(), static_cast<size_t>(hybrid->config.depth));
  for (int64_t i = 0; i < hybrid->config.depth; ++i) {
    const bool student = std::count(replaced.begin(), replaced.end(), i) > 0;
    EXPECT_EQ(hybrid->config.mixers[i], student ? s.mixer : "attention") << "block " << i;
    EXPECT_EQ(hybrid->blocks[i].mixer->kind(), student ? "gated_rnn" : "attention") << "block " << i;
  }
}

// The fine-tune's logged loss is CE + kl_weight KL, the KL taken at the
// configured temperature: the same first batch gives another KL at another
// temperature (a fine-tune that ignored it went unnoticed). The T^2 factor
// keeps the KL of nearly equal logits nearly the same at any T: here 4% apart.
TEST(Distill, FinetuneLossUsesTheTemperatureAndKlWeight) {
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  REQUIRE_SHARED("data/imagenet-sample.tar");
  const std::string images = testing::make_image_folder(testing::scratch_path("engine_distill_img"));
  std::vector<nlohmann::json> first_records;
  for (double temperature : {1.0, 4.0}) {
    const std::string out = testing::scratch_path(fmt::format("engine_distill_t{}", temperature));
    DistillSettings s = tiny_settings(images, out);
    s.layers = "1";
    s.budget_images = 8;
    s.finetune_images = 8;
    s.temperature = temperature;
    s.kl_weight = 0.7;
    run_distill(s);
    std::ifstream in(out + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json record = nlohmann::json::parse(line);
      if (record["phase"] == "finetune") first_records.push_back(record);
    }
    // Layer 1 alone replaced (the end-to-end run's sparsest:2 picks layers 0
    // and 1 of the 3-block teacher): config.json names the student's mixer
    // at block 1, not at the first entry.
    EXPECT_EQ(load_vit(out + "/hybrid")->config.mixers,
              (std::vector<std::string>{"attention", s.mixer, "attention"}));
  }
  ASSERT_EQ(first_records.size(), 2u);
  for (const nlohmann::json& r : first_records) {
    EXPECT_NEAR(r["loss"].get<double>(), r["ce"].get<double>() + 0.7 * r["kl"].get<double>(), 1e-5);
  }
  EXPECT_EQ(first_records[0]["ce"], first_records[1]["ce"]);
  const double kl_t1 = first_records[0]["kl"].get<double>(), kl_t4 = first_records[1]["kl"].get<double>();
  EXPECT_GT(std::abs(kl_t1 - kl_t4), 0.01 * std::max(kl_t1, kl_t4)) << kl_t1 << " at T = 1, " << kl_t4 << " at T = 4";
}

TEST(Distill, BadInputsLeaveAnEarlierRunAsItWas) {
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  REQUIRE_SHARED("data/imagenet-sample.tar");
  const std::string images = testing::make_image_folder(testing::scratch_path("engine_distill_img"));
  const std::string out = testing::scratch_path("engine_distill_kept");
  fs::remove_all(out);
  fs::create_directories(out);
  data::write_file(out + "/metrics.jsonl", "the earlier run's log\n");
  data::write_file(out + "/results.json", "{}\n");
  DistillSettings s = tiny_settings(images, out);  // overwrite = true
  s.layers = "sparsest:40";                         // the fixture has 3 blocks
  testing::expect_error_mentioning([&] { run_distill(s); }, {"sparsest:40", "1..3"});
  s.layers = "sparsest:2";
  s.precision = "bf16";  // on the CPU
  testing::expect_error_mentioning([&] { run_distill(s); }, {"precision bf16 needs a GPU", "device cpu"});
  s.precision = "fp32";
  s.mixer = "gated_rnn:width=-1";  // a value that only the mixer itself checks
  testing::expect_error_mentioning([&] { run_distill(s); }, {"width"});
  s.mixer = "gated_rnn:width=16";
  s.data = images + "/missing";
  EXPECT_THROW(run_distill(s), Error);
  std::ifstream log(out + "/metrics.jsonl");
  std::string line;
  std::getline(log, line);
  EXPECT_EQ(line, "the earlier run's log");
}

TEST(Distill, GroupwiseReportsEveryGroupAndRho) {
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  REQUIRE_SHARED("data/imagenet-sample.tar");
  const std::string images = testing::make_image_folder(testing::scratch_path("engine_distill_img2"));
  const std::string out = testing::scratch_path("engine_distill_groups");
  DistillSettings s = tiny_settings(images, out);
  s.experiment = "groupwise";
  s.groups = "each";
  s.budget_images = 32;
  nlohmann::json results = run_distill(s);
  ASSERT_EQ(results["groups"].size(), 3u);
  for (const auto& g : results["groups"]) {
    EXPECT_TRUE(g.contains("k90"));
    EXPECT_TRUE(g.contains("drop"));
    EXPECT_EQ(g["drop_std"].get<double>(), 0.0);  // one seed
  }
  EXPECT_TRUE(fs::exists(out + "/drop_vs_k90.svg"));
  EXPECT_TRUE(results.contains("spearman_rho"));
  // (rho is null where the drops are all equal, as the tiny teacher's can be; p comes with rho.)
  EXPECT_EQ(results.contains("spearman_p"), !results["spearman_rho"].is_null());
  EXPECT_FALSE(results.contains("spearman_rho_per_seed"));
}

// "<run> <seed> <phase> <step>" of every distill and fine-tune record, where
// <run> is the record's `run_key` (group or level).
std::multiset<std::string> run_records(const std::string& metrics_path, const char* run_key) {
  std::multiset<std::string> records;
  std::ifstream in(metrics_path);
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json r = nlohmann::json::parse(line);
    if (r["phase"] != "distill" && r["phase"] != "finetune") continue;
    records.insert(fmt::format("{} {} {} {}", r.value(run_key, "?"), r.value("seed", -1),
                               r["phase"].get<std::string>(), r["step"].get<int64_t>()));
  }
  return records;
}

// Several seeds: each group is run once per seed, each run as the same seed
// alone would give, and the group reports their mean and spread.
TEST(Distill, GroupwiseRepeatsEveryGroupPerSeed) {
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  REQUIRE_SHARED("data/imagenet-sample.tar");
  const std::string images = testing::make_image_folder(testing::scratch_path("engine_distill_img4"));
  DistillSettings s = tiny_settings(images, testing::scratch_path("engine_distill_seeds"));
  s.experiment = "groupwise";
  s.groups = "0;2";
  s.budget_images = 32;
  s.finetune_images = 16;
  s.seeds = {3, 4};
  const nlohmann::json results = run_distill(s);
  // 2 groups x 2 seeds x (distill steps 0 and 3, fine-tune steps 0 and 1), each record naming its run.
  EXPECT_EQ(run_records(s.out_dir + "/metrics.jsonl", "layers"),
            (std::multiset<std::string>{"0 3 distill 0", "0 3 distill 3", "0 3 finetune 0", "0 3 finetune 1",
                                        "0 4 distill 0", "0 4 distill 3", "0 4 finetune 0", "0 4 finetune 1",
                                        "2 3 distill 0", "2 3 distill 3", "2 3 finetune 0", "2 3 finetune 1",
                                        "2 4 distill 0", "2 4 distill 3", "2 4 finetune 0", "2 4 finetune 1"}));
  s.seeds = {4};
  s.out_dir = testing::scratch_path("engine_distill_seed4");
  const nlohmann::json alone = run_distill(s);
  ASSERT_EQ(results["groups"].size(), 2u);
  for (size_t g = 0; g < 2; ++g) {
    const auto& group = results["groups"][g];
    ASSERT_EQ(group["seeds"].size(), 2u);
    const double a = group["seeds"][0]["drop"], b = group["seeds"][1]["drop"];
    EXPECT_EQ(group["seeds"][0]["seed"], 3);
    EXPECT_NEAR(group["drop"].get<double>(), (a + b) / 2, 1e-12);
    EXPECT_NEAR(group["drop_std"].get<double>(), std::abs(a - b) / std::sqrt(2.0), 1e-12);
    EXPECT_NEAR(group["top1"].get<double>(),
                (group["seeds"][0]["top1"].get<double>() + group["seeds"][1]["top1"].get<double>()) / 2, 1e-12);
    EXPECT_EQ(group["seeds"][1]["top1"], alone["groups"][g]["top1"]) << "seed 4 differs from seed 4 run alone";
  }
  EXPECT_EQ(results["spearman_rho_per_seed"].size(), 2u);
  EXPECT_EQ(results["seeds"], nlohmann::json({3, 4}));
}

TEST(Distill, TeacherSparsitySweepWithAnAvitTeacher) {
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  REQUIRE_SHARED("data/imagenet-sample.tar");
  const std::string images = testing::make_image_folder(testing::scratch_path("engine_distill_img3"));
  const std::string out = testing::scratch_path("engine_distill_sweep");
  DistillSettings s = tiny_settings(images, out);
  s.experiment = "teacher_sparsity_sweep";
  const std::string avit_teacher = testing::save_avit_teacher(testing::scratch_path("engine_avit_teacher"));
  s.teachers = "dense:" + s.teacher + "; avit:" + avit_teacher;
  s.layers = "sparsest:1";
  s.budget_images = 32;
  s.finetune_images = 8;
  s.seeds = {0, 1};
  nlohmann::json results = run_distill(s);
  ASSERT_EQ(results["levels"].size(), 2u);
  const auto& dense = results["levels"][0];
  const auto& avit = results["levels"][1];
  EXPECT_EQ(dense["mean_retention"].get<double>(), 1.0);
  EXPECT_LT(avit["mean_retention"].get<double>(), 0.95);
  EXPECT_GT(avit["mean_retention"].get<double>(), 0.3);
  EXPECT_TRUE(avit["halting"].get<bool>());
  // The hybrid keeps the teacher's halting: it drops tokens too.
  EXPECT_LT(avit["hybrid_mean_retention"].get<double>(), 1.0);
  for (const auto& level : results["levels"]) {
    EXPECT_NEAR(level["gap"].get<double>(),
                100 * (level["teacher_top1"].get<double>() - level["hybrid_top1"].get<double>()), 1e-9);
    ASSERT_EQ(level["seeds"].size(), 2u);
    const double a = level["seeds"][0]["gap"], b = level["seeds"][1]["gap"];
    EXPECT_NEAR(level["gap"].get<double>(), (a + b) / 2, 1e-9);
    EXPECT_NEAR(level["gap_std"].get<double>(), std::abs(a - b) / std::sqrt(2.0), 1e-9);
    EXPECT_TRUE(level["hybrid_report"].contains("latency_ms_b1"));  // the first seed's hybrid is timed
  }
  EXPECT_TRUE(fs::exists(out + "/gap_vs_retention.svg"));
  // Every teacher and seed: distill steps 0..3 logged at 0 and 3, the one fine-tune step at 0.
  std::multiset<std::string> expected;
  for (const char* level : {"dense", "avit"}) {
    for (int seed : {0, 1}) {
      for (const char* record : {"distill 0", "distill 3", "finetune 0"})
        expected.insert(fmt::format("{} {} {}", level, seed, record));
    }
  }
  EXPECT_EQ(run_records(out + "/metrics.jsonl", "level"), expected);
}

TEST(Distill, SweepSettingsAreChecked) {
  Config config = Config::parse("[data]\npath = x\n[experiment]\nkind = teacher_sparsity_sweep\nteachers = dense\n",
                                "sweep.ini");
  testing::expect_error_mentioning([&] { DistillSettings::from_config(config); }, {"'dense' is not name:path"});
  Config single = Config::parse("[data]\npath = x\n", "single.ini");
  testing::expect_error_mentioning([&] { DistillSettings::from_config(single); }, {"single.ini", "[teacher]"});
  Config typo = Config::parse("[teacher]\nmodle = m\n[data]\npath = x\n", "typo.ini");
  testing::expect_error_mentioning([&] { DistillSettings::from_config(typo); },
                                   {"missing key [teacher] model in typo.ini (is 'modle' at typo.ini:2 a typo?)"});
}

// The shipped ./train_distill configs read without an unknown key (tests run
// from the repository root); the group-wise one repeats its runs over 3 seeds.
TEST(Distill, ShippedConfigsAreValid) {
  for (const char* path : {"configs/default.ini", "configs/cifar10_full.ini", "configs/cifar10_groupwise.ini"}) {
    Config config = Config::load(path);
    const DistillSettings s = DistillSettings::from_config(config);
    config.check_all_used();
    EXPECT_EQ(s.seeds.size(), s.experiment == "groupwise" ? 3u : 1u) << path;
  }
}

// A budget is trained in whole batches: one that is not a multiple of the
// batch would leave its remainder untrained while results.json records it.
TEST(Distill, BudgetSettingsAreChecked) {
  auto settings = [](const std::string& extra, const std::string& overrides = "") {
    Config c = Config::parse("[teacher]\nmodel = m\n[data]\npath = x\nbatch_size = 64\n" + extra, "budget.ini");
    if (!overrides.empty()) c.apply_override(overrides);
    return DistillSettings::from_config(c);
  };
  const DistillSettings whole = settings("[distill]\nbudget_images = 128\n[finetune]\nbudget_images = 0\n");
  EXPECT_EQ(whole.budget_images, 128);
  EXPECT_EQ(whole.finetune_images, 0);
  EXPECT_EQ(settings("").budget_images % 64, 0);  // the default fits the default batch
  // and any other: rounded down to whole batches, at least one.
  for (int64_t batch : {96, 30000}) {
    const Config c = Config::parse(fmt::format("[teacher]\nmodel = m\n[data]\npath = x\nbatch_size = {}\n", batch));
    const DistillSettings s = DistillSettings::from_config(c);
    EXPECT_EQ(s.budget_images, batch == 96 ? 20448 : 30000);
    EXPECT_EQ(s.finetune_images % batch, 0);
  }
  testing::expect_error_mentioning([&] { settings("[distill]\nbudget_images = 63\n"); },
                                   {"budget.ini:7", "[distill] budget_images = 63", "batch_size = 64", "use 64"});
  testing::expect_error_mentioning([&] { settings("[distill]\nbudget_images = 100\n"); },
                                   {"[distill] budget_images = 100", "batch_size = 64", "use 64 or 128"});
  testing::expect_error_mentioning([&] { settings("", "distill.budget_images=95"); },
                                   {"<override>", "[distill] budget_images = 95"});
  testing::expect_error_mentioning([&] { settings("[finetune]\nbudget_images = 10\n"); },
                                   {"[finetune] budget_images = 10", "batch_size = 64"});
  testing::expect_error_mentioning([&] { settings("[finetune]\nbudget_images = 96\n"); },
                                   {"[finetune] budget_images = 96", "use 64 or 128"});
  testing::expect_error_mentioning([&] { settings("[finetune]\nbudget_images = -64\n"); },
                                   {"[finetune] budget_images = '-64'", ">= 0"});
}

// A key that the chosen experiment does not read is an error, not ignored:
// (kind, the key's section and line) -> the error names the key and the kind.
TEST(Distill, KeysOfAnotherExperimentAreRefused) {
  struct Case {
    std::string kind, setting, key;
  };
  const std::string teachers = "teachers = a:x;b:y\n";
  const Case cases[] = {
      {"single", "[experiment]\ngroups = 0;1\n", "[experiment] groups"},
      {"single", "[experiment]\nteachers = a:x;b:y\n", "[experiment] teachers"},
      {"groupwise", "[experiment]\nteachers = a:x;b:y\n", "[experiment] teachers"},
      {"groupwise", "[layers]\nselect = 0,1\n", "[layers] select"},
      {"teacher_sparsity_sweep", "[experiment]\ngroups = 0;1\n", "[experiment] groups"},
      {"teacher_sparsity_sweep", "[teacher]\nmodel = m\n", "[teacher] model"},
      {"teacher_sparsity_sweep", "[teacher]\nconfig = c.json\n", "[teacher] config"},
  };
  for (const Case& c : cases) {
    const bool sweep = c.kind == "teacher_sparsity_sweep";
    const std::string text = "[data]\npath = x\n" + c.setting + "[experiment]\nkind = " + c.kind + "\n" +
                             (sweep ? teachers : "") + (sweep ? "" : "[teacher]\nmodel = m\n");
    Config config = Config::parse(text, "kind.ini");
    testing::expect_error_mentioning([&] { DistillSettings::from_config(config); },
                                     {"kind.ini:", c.key, "kind = " + c.kind});
  }
  // Each key is accepted by the kinds that read it.
  EXPECT_EQ(DistillSettings::from_config(Config::parse(
                "[teacher]\nmodel = m\n[data]\npath = x\n[experiment]\nkind = groupwise\ngroups = 0;1\n"))
                .groups,
            "0;1");
  EXPECT_EQ(DistillSettings::from_config(Config::parse(
                "[data]\npath = x\n[layers]\nselect = 0\n[experiment]\nkind = teacher_sparsity_sweep\n" + teachers))
                .layers,
            "0");
}

TEST(Distill, DeviceSettingErrorNamesTheKey) {
  Config config = Config::parse("[teacher]\nmodel = m\n[data]\npath = x\n[run]\ndevice = gpu\n", "device.ini");
  testing::expect_error_mentioning([&] { DistillSettings::from_config(config); },
                                   {"device.ini:6: [run] device", "unknown device 'gpu'"});
}

// A spec that parse_mixer_spec refuses names [student] mixer and where it was set.
TEST(Distill, MixerSettingErrorNamesTheKey) {
  for (const char* spec : {"gated_rn", "gated_rnn:widht=96"}) {
    Config config = Config::parse(fmt::format("[teacher]\nmodel = m\n[data]\npath = x\n[student]\nmixer = {}\n", spec),
                                  "mixer.ini");
    testing::expect_error_mentioning([&] { DistillSettings::from_config(config); },
                                     {"mixer.ini:6: [student] mixer", spec});
  }
}

TEST(Distill, PrecisionSettingIsChecked) {
  auto settings = [](const std::string& run) {
    return DistillSettings::from_config(
        Config::parse("[teacher]\nmodel = m\n[data]\npath = x\n[run]\ndevice = cpu\n" + run, "precision.ini"));
  };
  EXPECT_EQ(settings("").precision, "fp32");
  EXPECT_EQ(settings("precision = bf16\n").precision, "bf16");  // refused when the run starts, on the CPU
  testing::expect_error_mentioning([&] { settings("precision = fp16\n"); }, {"precision.ini", "fp16", "bf16"});
}

// The pipeline in the GPU's mixed precision: the students still learn, the
// results say which precision ran, and the layer ranking is float32's.
TEST(CudaDistill, Bf16RunReducesTheLossAndRanksLayersAsFloat32) {
  if (cuda_device_count() == 0) GTEST_SKIP();
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  REQUIRE_SHARED("data/imagenet-sample.tar");
  const std::string images = testing::make_image_folder(testing::scratch_path("engine_distill_img"));
  const std::string out = testing::scratch_path("engine_distill_bf16");
  DistillSettings s = tiny_settings(images, out);
  s.device = Device::cuda();
  s.layers = "sparsest:2";
  const nlohmann::json fp32 = run_distill(s);
  s.precision = "bf16";
  const nlohmann::json bf16 = run_distill(s);

  const std::vector<double> losses = distill_losses(out + "/metrics.jsonl");
  ASSERT_GE(losses.size(), 2u);
  EXPECT_LT(losses.back(), 0.7 * losses.front()) << "distillation in bf16 did not reduce the loss";
  EXPECT_EQ(bf16["precision"], "bf16");
  EXPECT_EQ(fp32["precision"], "fp32");
  EXPECT_EQ(bf16["sparsity"]["k90"], fp32["sparsity"]["k90"]);  // measured in float32 both times
  EXPECT_EQ(bf16["sparsity"]["ranking"], fp32["sparsity"]["ranking"]);
  EXPECT_EQ(bf16["replaced_layers"], fp32["replaced_layers"]);
}

// Two 2x2 images: fewer than a batch of 4.
class TwoImages : public data::Dataset {
 public:
  size_t size() const override { return 2; }
  int num_classes() const override { return 2; }
  data::Sample get(size_t i) const override { return {data::Image(2, 2, 3), label(i)}; }
  int64_t label(size_t i) const override { return static_cast<int64_t>(i); }
  std::string name(size_t i) const override { return std::to_string(i); }
};

TEST(Distill, BatchStreamRefusesASetSmallerThanABatch) {
  DataSettings options;
  options.batch_size = 4;
  options.workers = 0;
  Preprocess preprocess;
  preprocess.input_size = 2;
  preprocess.crop_pct = 1.0;
  const TwoImages images;
  testing::expect_error_mentioning([&] { BatchStream(images, preprocess, options, 0); },
                                   {"holds 2 images", "batch_size = 4"});
  options.batch_size = 2;
  BatchStream stream(images, preprocess, options, 0);
  Tensor batch, labels;
  for (int i = 0; i < 3; ++i) stream.next(&batch, &labels);  // epochs roll over
  EXPECT_EQ(batch.shape(), (Shape{2, 3, 2, 2}));
}

TEST(Distill, SeedSettingsAreChecked) {
  auto settings = [](const std::string& distill, const std::string& kind) {
    return DistillSettings::from_config(Config::parse(
        "[teacher]\nmodel = m\n[data]\npath = x\n[distill]\n" + distill + "\n[experiment]\nkind = " + kind + "\n",
        "seeds.ini"));
  };
  EXPECT_EQ(settings("seed = 5", "groupwise").seeds, std::vector<uint64_t>({5}));
  EXPECT_EQ(settings("seeds = 2, 7", "groupwise").seeds, std::vector<uint64_t>({2, 7}));
  EXPECT_EQ(settings("seeds = 9", "single").seeds, std::vector<uint64_t>({9}));
  testing::expect_error_mentioning([&] { settings("seeds = 1, 2", "single"); }, {"seeds.ini", "seeds = 1, 2", "single"});
  testing::expect_error_mentioning([&] { settings("seed = 1\nseeds = 1, 2", "groupwise"); }, {"both", "'seeds'"});
  testing::expect_error_mentioning([&] { settings("seeds = 1, 1", "groupwise"); }, {"1 is listed twice"});
  testing::expect_error_mentioning([&] { settings("seeds = -3", "groupwise"); }, {"-3 is negative"});
  testing::expect_error_mentioning([&] { settings("seed = -1", "single"); }, {"seed = -1 is negative"});
}

// A bad value given by --set is named as an override, not as the file's.
TEST(Distill, ErrorsNameTheOverrideThatSetTheValue) {
  auto overridden = [](const std::string& assignment) {
    Config c = Config::parse("[teacher]\nmodel = m\n[data]\npath = x\n", "file.ini");
    c.apply_override(assignment);
    DistillSettings::from_config(c);
  };
  testing::expect_error_mentioning([&] { overridden("distill.seed=-1"); }, {"<override>: [distill] seed = -1"});
  testing::expect_error_mentioning([&] { overridden("distill.seeds=-2"); }, {"<override>: [distill] seeds: -2"});
  testing::expect_error_mentioning([&] { overridden("eval.latency_batches=0"); },
                                   {"<override>: [eval] latency_batches = '0'"});
}

// train_distill's schedule for a run of `steps` optimizer steps (0 .. steps - 1):
// a linear warmup from 0 over the first warmup_fraction of them, the full lr
// at the first step after it, then a cosine that stays above 0 to the run's
// last step (which still learns).
TEST(Distill, WarmupCosineScheduleOfARun) {
  const WarmupCosineSchedule schedule = warmup_cosine(0.1, 10, 0.2);  // 2 warmup steps
  EXPECT_DOUBLE_EQ(schedule.lr_at(0), 0.0);
  EXPECT_DOUBLE_EQ(schedule.lr_at(1), 0.05);
  EXPECT_DOUBLE_EQ(schedule.lr_at(2), 0.1);
  EXPECT_NEAR(schedule.lr_at(6), 0.05 * (1 + std::cos(M_PI * 4 / 9)), 1e-12);
  EXPECT_NEAR(schedule.lr_at(9), 0.05 * (1 + std::cos(M_PI * 7 / 9)), 1e-12);
  EXPECT_GT(schedule.lr_at(9), 0.0);
  // No warmup: the full lr from the first step.
  EXPECT_DOUBLE_EQ(warmup_cosine(0.1, 10, 0.0).lr_at(0), 0.1);
}

// The training loop hands each student its own layer's halting mask: every
// image of the folder is one uniform colour, so every batch (crops and flips
// included) is that image 8 times, and the first logged loss of a student of
// layer 2 is recomputed here from the teacher's trace and the saved student
// (after one step at lr 1e-9, its initial state to ~1e-9). Another layer's
// mask, or none, logs another number.
TEST(Distill, AvitTeacherStudentGetsItsLayersHaltingMask) {
  REQUIRE_SHARED("fixtures/timm_vit_tiny.safetensors");
  namespace fs = std::filesystem;
  data::Image picture(40, 48, 3);
  for (int y = 0; y < 40; ++y) {
    for (int x = 0; x < 48; ++x) picture.at(y, x, 0) = 200, picture.at(y, x, 1) = 90, picture.at(y, x, 2) = 30;
  }
  const std::string images = testing::scratch_path("engine_distill_uniform");
  fs::remove_all(images);
  for (const char* split : {"train", "test"}) {
    for (const char* cls : {"even", "odd"}) {
      fs::create_directories(fs::path(images) / split / cls);
      for (int i = 0; i < 4; ++i) data::write_png(picture, fmt::format("{}/{}/{}/{}.png", images, split, cls, i));
    }
  }
  DistillSettings s = tiny_settings(images, testing::scratch_path("engine_distill_running"));
  s.teacher = testing::save_avit_teacher(testing::scratch_path("engine_distill_running_teacher"));
  s.layers = "2";
  s.budget_images = 8;
  s.lr = 1e-9;
  s.cosine_weight = 0.3;
  run_distill(s);
  double logged = -1;
  {
    std::ifstream in(s.out_dir + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json record = nlohmann::json::parse(line);
      if (record["phase"] == "distill" && record["step"] == 0) logged = record["layer_loss"]["2"];
    }
  }
  ASSERT_GT(logged, 0.0);

  auto teacher = load_vit(s.teacher);
  auto hybrid = load_vit(s.out_dir + "/hybrid");
  const auto train_set = data::open_dataset(images, "train");
  const Tensor batch = first_images(*train_set, teacher->config.preprocess, 1, Device::cpu());
  NoGradGuard no_grad;
  ForwardTrace trace;
  trace.last_block = 2;
  HaltingTrace halting;
  avit_forward_tokens(*teacher, batch, {}, &halting, &trace);
  auto loss_with = [&](const Tensor& active) {
    return student_loss(*hybrid->blocks[2].mixer, trace.blocks[2], 0.3, active).item<double>();
  };
  const double expected = loss_with(halting.active[2]);
  EXPECT_NEAR(logged, expected, 1e-5 * expected);  // (they agree to ~4e-7)
  // Layer 1's mask (or none) gives a loss ~1% off: far outside that tolerance.
  ASSERT_NE(halting.active[1].to_doubles(), halting.active[2].to_doubles());
  EXPECT_GT(std::abs(loss_with(halting.active[1]) - expected), 1e-3 * expected);
  EXPECT_GT(std::abs(loss_with(Tensor()) - expected), 1e-3 * expected);
}

}  // namespace
}  // namespace engine

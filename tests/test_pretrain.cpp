// ./pretrain on tiny synthetic folders: training lowers the loss, a run cut
// short (or killed) and resumed ends bit-identical to an uninterrupted one and
// leaves the same log, checkpoints survive an interrupted write, outputs are
// not overwritten by accident, and configuration errors name the key and value.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <functional>

#include "data/files.h"
#include "data/image.h"
#include "engine/ops/ops.h"
#include "engine/safetensors.h"
#include "models/vit_checkpoint.h"
#include "tests/expect_error.h"
#include "train/checkpoint.h"
#include "train/pretrain.h"

namespace engine {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::error_of;

// root/{train,test}/{bright_top,bright_bottom}/N.png: 8x8 noisy images whose
// class shows in which half is brighter (flips and small crops keep it).
void write_split(const std::string& root, const std::string& split, int per_class, Rng& rng) {
  for (int cls = 0; cls < 2; ++cls) {
    const fs::path dir = fs::path(root) / split / (cls == 0 ? "bright_top" : "bright_bottom");
    fs::create_directories(dir);
    for (int i = 0; i < per_class; ++i) {
      data::Image image(8, 8, 3);
      for (int y = 0; y < 8; ++y) {
        const bool bright = (y < 4) == (cls == 0);
        for (int x = 0; x < 8; ++x) {
          for (int c = 0; c < 3; ++c) image.at(y, x, c) = static_cast<uint8_t>((bright ? 150 : 40) + rng.integer(100));
        }
      }
      data::write_png(image, (dir / (std::to_string(i) + ".png")).string());
    }
  }
}

class PretrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Rng rng(7);
    write_split(images_.path(), "train", 16, rng);
    write_split(images_.path(), "test", 4, rng);
  }

  // A 2-block ViT on 8 px images, 32 training images in batches of 8 (4 steps an epoch).
  Config config(const std::string& out, const std::vector<std::string>& overrides = {}) const {
    Config c = Config::parse(fmt::format(R"([model]
img_size = 8
patch_size = 4
embed_dim = 16
depth = 2
num_heads = 2
drop_path_rate = 0.1
[data]
path = {}
train_subdir = train
test_subdir = test
crop_padding = 2
workers = 2
[train]
epochs = 2
warmup_epochs = 1
batch_size = 8
lr = 0.003
seed = 3
[eval]
every_epochs = 1
[run]
device = cpu
[output]
dir = {}
checkpoint_every_epochs = 1
)",
                                         images_.path(), out),
                             "tiny.ini");
    for (const std::string& assignment : overrides) c.apply_override(assignment);
    return c;
  }

  nlohmann::json run(const std::string& out, const std::vector<std::string>& overrides = {}) const {
    const Config c = config(out, overrides);
    const PretrainSettings settings = PretrainSettings::from_config(c);
    c.check_all_used();
    return run_pretrain(settings);
  }

  std::string out(const std::string& name) const { return (fs::path(outputs_.path()) / name).string(); }

  data::TempDir images_, outputs_;
};

// Every tensor of a checkpoint file, by name.
std::map<std::string, Tensor> tensors_of(const std::string& path) {
  std::map<std::string, Tensor> tensors;
  const SafetensorsFile file = SafetensorsFile::open(path);
  for (const std::string& name : file.names()) tensors[name] = file.get(name);
  return tensors;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  const Tensor ha = a.detach().contiguous(), hb = b.detach().contiguous();
  return ha.dtype() == hb.dtype() && ha.shape() == hb.shape() &&
         std::memcmp(ha.raw_data(), hb.raw_data(), ha.nbytes()) == 0;
}

void expect_identical_files(const std::string& a, const std::string& b) {
  const auto ta = tensors_of(a), tb = tensors_of(b);
  ASSERT_EQ(ta.size(), tb.size()) << a << " vs " << b;
  for (const auto& [name, tensor] : ta) {
    ASSERT_TRUE(tb.count(name)) << name;
    EXPECT_TRUE(same_bytes(tensor, tb.at(name))) << name << " differs";
  }
}

// The metrics log's records of `phase` ("" for all).
std::vector<nlohmann::json> log_records(const std::string& metrics_path, const std::string& phase = "") {
  std::vector<nlohmann::json> records;
  std::ifstream in(metrics_path);
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json record = nlohmann::json::parse(line);
    if (phase.empty() || record["phase"] == phase) records.push_back(record);
  }
  return records;
}

std::vector<nlohmann::json> epoch_records(const std::string& metrics_path) {
  return log_records(metrics_path, "epoch");
}

// The log records of run folder `dir`, without what differs between two runs
// computing the same numbers: timings and the run's folder.
std::vector<nlohmann::json> untimed_records(const std::string& dir, const std::string& phase = "") {
  std::vector<nlohmann::json> records = log_records(dir + "/metrics.jsonl", phase);
  for (nlohmann::json& record : records) {
    for (const char* key : {"time", "images_per_second", "dir", "checkpoint"}) record.erase(key);
  }
  return records;
}

void expect_time_never_goes_back(const std::string& metrics_path) {
  double last = 0;
  for (const nlohmann::json& record : log_records(metrics_path)) {
    EXPECT_GE(record["time"].get<double>(), last) << record.dump();
    last = record["time"].get<double>();
  }
}

TEST_F(PretrainTest, TrainingLowersTheLossAndWritesALoadableModel) {
  const nlohmann::json results = run(out("learn"), {"train.epochs=8"});
  const std::vector<nlohmann::json> epochs = epoch_records(out("learn") + "/metrics.jsonl");
  ASSERT_EQ(epochs.size(), 8u);
  EXPECT_LT(epochs.back()["train_loss"].get<double>(), 0.75 * epochs.front()["train_loss"].get<double>())
      << "training did not lower the loss";
  EXPECT_TRUE(results["finished"].get<bool>());
  EXPECT_EQ(results["steps"].get<int64_t>(), 32);
  EXPECT_GT(results["images_per_second"].get<double>(), 0.0);
  EXPECT_GE(results["best_top1"].get<double>(), results["final_top1"].get<double>());
  // The checkpoint's model loads as any ViT, labels included.
  auto model = load_vit(out("learn") + "/checkpoint");
  EXPECT_EQ(model->config.num_classes, 2);
  EXPECT_EQ(model->config.label_names, std::vector<std::string>({"bright_bottom", "bright_top"}));
  EXPECT_TRUE(fs::exists(out("learn") + "/results.json"));
}

TEST_F(PretrainTest, ResumedRunIsBitIdenticalToAStraightRun) {
  const nlohmann::json straight = run(out("straight"));
  ASSERT_EQ(straight["steps"].get<int64_t>(), 8);
  // Stopped mid-epoch (step 3 of 4), then across the epoch boundary (step 6), then to the end.
  EXPECT_FALSE(run(out("pieces"), {"run.stop_after_steps=3"})["finished"].get<bool>());
  EXPECT_EQ(run(out("pieces"), {"run.stop_after_steps=3", "output.resume=true"})["steps"].get<int64_t>(), 6);
  const nlohmann::json resumed = run(out("pieces"), {"output.resume=true"});
  EXPECT_TRUE(resumed["finished"].get<bool>());
  expect_identical_files(out("straight") + "/checkpoint/model.safetensors",
                         out("pieces") + "/checkpoint/model.safetensors");
  expect_identical_files(out("straight") + "/checkpoint/train_state.safetensors",
                         out("pieces") + "/checkpoint/train_state.safetensors");
  EXPECT_EQ(resumed["final_top1"], straight["final_top1"]);
  EXPECT_EQ(resumed["best_top1"], straight["best_top1"]);

  // A setting that changes the numbers cannot differ on resume.
  EXPECT_THAT(error_of([&] { run(out("pieces"), {"output.resume=true", "train.lr=0.01"}); }),
              AllOf(HasSubstr("train.lr = 0.01 (checkpoint: 0.003)"), HasSubstr("overwrite = true")));
}

// A changed architecture is a changed setting, named as one, before any tensor
// is loaded; the earlier run stays as it was.
TEST_F(PretrainTest, ResumeWithAnotherArchitectureNamesTheSetting) {
  run(out("arch"), {"run.stop_after_steps=1"});
  const std::vector<uint8_t> metrics = data::read_file(out("arch") + "/metrics.jsonl");
  EXPECT_THAT(error_of([&] { run(out("arch"), {"output.resume=true", "model.depth=3"}); }),
              AllOf(HasSubstr("settings differ from the checkpoint's: model.depth = 3 (checkpoint: 2)"),
                    HasSubstr("overwrite = true")));
  EXPECT_THAT(error_of([&] { run(out("arch"), {"output.resume=true", "model.embed_dim=32"}); }),
              AllOf(HasSubstr("settings differ from the checkpoint's: model.embed_dim = 32 (checkpoint: 16)"),
                    ::testing::Not(HasSubstr("shape"))));
  EXPECT_EQ(data::read_file(out("arch") + "/metrics.jsonl"), metrics);
}

// Step s trains at the schedule's lr_at(s): with a warmup from warmup_lr = 0,
// the first step's update is zero whatever the base lr, so two runs stopped
// after it hold the same model; a warmup from warmup_lr > 0 moves it.
TEST_F(PretrainTest, FirstStepTrainsAtTheWarmupStartLr) {
  run(out("zero"), {"train.warmup_lr=0", "run.stop_after_steps=1"});
  run(out("zero_other_lr"), {"train.warmup_lr=0", "train.lr=0.01", "run.stop_after_steps=1"});
  run(out("nonzero"), {"train.warmup_lr=0.001", "run.stop_after_steps=1"});
  const std::string model = "/checkpoint/model.safetensors";
  expect_identical_files(out("zero") + model, out("zero_other_lr") + model);
  const auto zero = tensors_of(out("zero") + model), moved = tensors_of(out("nonzero") + model);
  int64_t changed = 0;
  for (const auto& [name, tensor] : zero) changed += !same_bytes(tensor, moved.at(name));
  EXPECT_GT(changed, 0);
}

// The loss settings reach the training step: label smoothing and gradient
// clipping each change the model that two steps train.
TEST_F(PretrainTest, LabelSmoothingAndClippingChangeTheTrainedModel) {
  const std::vector<std::string> plain = {"run.stop_after_steps=2", "train.label_smoothing=0", "train.clip_grad_norm=0"};
  auto with = [&](const std::string& assignment) {
    std::vector<std::string> overrides = plain;
    overrides.push_back(assignment);
    return overrides;
  };
  run(out("plain"), plain);
  run(out("smoothed"), with("train.label_smoothing=0.3"));
  run(out("clipped"), with("train.clip_grad_norm=0.0001"));
  const std::string model = "/checkpoint/model.safetensors";
  const auto reference = tensors_of(out("plain") + model);
  for (const char* name : {"smoothed", "clipped"}) {
    const auto trained = tensors_of(out(name) + model);
    int64_t changed = 0;
    for (const auto& [param, tensor] : reference) changed += !same_bytes(tensor, trained.at(param));
    EXPECT_GT(changed, 0) << name << " trained the same model as plain";
  }
}

// Killed after its checkpoint at the end of epoch 1, the run has logged two
// more steps, an epoch record and a checkpoint that its resume must not keep.
TEST_F(PretrainTest, ResumeAfterACrashDropsWhatWasLoggedAfterTheCheckpoint) {
  run(out("straight"), {"run.log_every_steps=1"});
  run(out("crashed"), {"run.log_every_steps=1", "run.stop_after_steps=4"});
  // The crash: the log runs on to step 6 while the checkpoint stays at step 4.
  fs::copy(out("crashed") + "/checkpoint", out("step4"), fs::copy_options::recursive);
  run(out("crashed"), {"run.log_every_steps=1", "run.stop_after_steps=2", "output.resume=true"});
  fs::remove_all(out("crashed") + "/checkpoint");
  fs::rename(out("step4"), out("crashed") + "/checkpoint");
  EXPECT_TRUE(run(out("crashed"), {"run.log_every_steps=1", "output.resume=true"})["finished"].get<bool>());

  // The straight run's log, with the resume after the checkpoint of step 4.
  std::vector<nlohmann::json> expected = untimed_records(out("straight"));
  const nlohmann::json checkpoint_at_4 = {{"phase", "checkpoint"}, {"step", 4}};
  const auto checkpoint = std::find(expected.begin(), expected.end(), checkpoint_at_4);
  ASSERT_NE(checkpoint, expected.end());
  expected.insert(checkpoint + 1, nlohmann::json{{"phase", "resume"}, {"step", 4}});
  EXPECT_EQ(untimed_records(out("crashed")), expected);
  expect_time_never_goes_back(out("crashed") + "/metrics.jsonl");

  // A log shorter than the checkpoint's is refused, and left as it is.
  const std::string log = out("crashed") + "/metrics.jsonl";
  const int64_t bytes = static_cast<int64_t>(fs::file_size(log));
  fs::resize_file(log, 10);
  EXPECT_EQ(error_of([&] { run(out("crashed"), {"output.resume=true"}); }),
            fmt::format("cannot continue metrics log '{}' from byte {}: it has only 10 bytes", log, bytes));
  EXPECT_EQ(fs::file_size(log), 10u);
  fs::remove(log);
  EXPECT_EQ(error_of([&] { run(out("crashed"), {"output.resume=true"}); }),
            fmt::format("cannot continue metrics log '{}' from byte {}: there is no such file", log, bytes));
}

// An epoch cut short logs a partial record; the resumed run's closing record,
// its train lines and its clock are the uninterrupted run's.
TEST_F(PretrainTest, EpochCutShortAndResumedLogsWhatAnUninterruptedOneLogs) {
  run(out("straight"), {"run.log_every_steps=1"});
  run(out("pieces"), {"run.log_every_steps=1", "run.stop_after_steps=3"});
  run(out("pieces"), {"run.log_every_steps=1", "run.stop_after_steps=3", "output.resume=true"});
  run(out("pieces"), {"run.log_every_steps=1", "output.resume=true"});

  EXPECT_EQ(untimed_records(out("pieces"), "train"), untimed_records(out("straight"), "train"));
  std::vector<nlohmann::json> complete, partial;
  for (const nlohmann::json& record : untimed_records(out("pieces"), "epoch")) {
    (record["complete"].get<bool>() ? complete : partial).push_back(record);
  }
  EXPECT_EQ(complete, untimed_records(out("straight"), "epoch"));
  // A partial record averages the epoch's steps so far: 1-3, then 5-6.
  const std::vector<nlohmann::json> train = untimed_records(out("straight"), "train");
  auto mean_loss = [&](int first, int last) {
    double sum = 0;
    for (int step = first; step <= last; ++step) sum += train[step - 1]["loss"].get<double>();
    return sum / (last - first + 1);
  };
  ASSERT_EQ(partial.size(), 2u);
  EXPECT_DOUBLE_EQ(partial[0]["train_loss"].get<double>(), mean_loss(1, 3));
  EXPECT_DOUBLE_EQ(partial[1]["train_loss"].get<double>(), mean_loss(5, 6));
  expect_time_never_goes_back(out("pieces") + "/metrics.jsonl");
}

// Rewrites the progress saved in train state `file` with edit(progress), as a
// damaged or hand-edited file would hold it.
void edit_saved_progress(const std::string& file, const std::function<void(nlohmann::json&)>& edit) {
  const SafetensorsFile state = SafetensorsFile::open(file);
  Metadata metadata = state.metadata();
  nlohmann::json progress = nlohmann::json::parse(metadata.at("progress"));
  edit(progress);
  metadata["progress"] = progress.dump();
  NamedTensors tensors;
  for (const std::string& name : state.names()) tensors.emplace_back(name, state.get(name));
  save_safetensors(file, tensors, metadata);
}

// A checkpoint that kept its architecture in one "model" object (saved before
// the [model] keys were compared one by one) still resumes, and a changed
// architecture is still named by its key.
TEST_F(PretrainTest, ResumesACheckpointWithItsArchitectureInOneObject) {
  run(out("one_object"), {"run.stop_after_steps=1"});
  edit_saved_progress(out("one_object") + "/checkpoint/train_state.safetensors", [](nlohmann::json& progress) {
    nlohmann::json& identity = progress["identity"];
    nlohmann::json model = nlohmann::json::object();
    for (const std::string key : {"depth", "embed_dim", "num_heads"}) {
      ASSERT_TRUE(identity.contains("model." + key)) << key;
      model[key] = identity["model." + key];
      identity.erase("model." + key);
    }
    identity["model"] = model;
  });
  EXPECT_THAT(error_of([&] { run(out("one_object"), {"output.resume=true", "model.depth=3"}); }),
              HasSubstr("settings differ from the checkpoint's: model.depth = 3 (checkpoint: 2)"));
  run(out("one_object"), {"output.resume=true", "run.stop_after_steps=2"});
}

TEST_F(PretrainTest, ResumingFromADamagedTrainStateNamesTheFileAndTheKeyAndWritesNothing) {
  run(out("damaged"), {"run.stop_after_steps=3"});
  const std::string state = out("damaged") + "/checkpoint/train_state.safetensors", intact = out("intact_state");
  fs::copy_file(state, intact);
  const std::vector<uint8_t> results = data::read_file(out("damaged") + "/results.json");
  const std::vector<uint8_t> metrics = data::read_file(out("damaged") + "/metrics.jsonl");
  auto resume_error = [&](const std::function<void(nlohmann::json&)>& damage) {
    fs::copy_file(intact, state, fs::copy_options::overwrite_existing);
    edit_saved_progress(state, damage);
    return error_of([&] { run(out("damaged"), {"output.resume=true"}); });
  };
  const std::string prefix = "cannot resume from " + state + ": ";
  const std::string older =
      " (damaged, or saved by an older ./pretrain: set [output] overwrite = true to start afresh)";
  EXPECT_EQ(resume_error([](nlohmann::json& p) { p.erase("step"); }), prefix + "its progress has no 'step'" + older);
  EXPECT_EQ(resume_error([](nlohmann::json& p) { p.erase("log_bytes"); }),
            prefix + "its progress has no 'log_bytes'" + older);
  // 2 epochs of 4 steps: 0 to 8 are steps of this run.
  EXPECT_EQ(resume_error([](nlohmann::json& p) { p["step"] = "3"; }),
            prefix + "progress 'step' = \"3\" is not an integer in [0, 8]");
  EXPECT_EQ(resume_error([](nlohmann::json& p) { p["step"] = -5; }),
            prefix + "progress 'step' = -5 is not an integer in [0, 8]");
  EXPECT_EQ(resume_error([](nlohmann::json& p) { p["step"] = 200000; }),
            prefix + "progress 'step' = 200000 is not an integer in [0, 8]");
  EXPECT_EQ(resume_error([](nlohmann::json& p) { p["step"] = 3.5; }),
            prefix + "progress 'step' = 3.5 is not an integer in [0, 8]");
  EXPECT_EQ(resume_error([](nlohmann::json& p) { p["last_top1"] = "high"; }),
            prefix + "progress 'last_top1' = \"high\" is neither null nor a number in [0, 1]");
  EXPECT_EQ(resume_error([](nlohmann::json& p) { p["wall_seconds"] = -1; }),
            prefix + "progress 'wall_seconds' = -1 is not a number of seconds >= 0");
  EXPECT_EQ(resume_error([](nlohmann::json& p) { p["epoch_loss_sum"] = "1.5"; }),
            prefix + "progress 'epoch_loss_sum' = \"1.5\" is neither null nor a number");
  EXPECT_EQ(resume_error([](nlohmann::json& p) { p["identity"] = 7; }),
            prefix + "progress 'identity' = 7 is not a JSON object");
  EXPECT_EQ(data::read_file(out("damaged") + "/results.json"), results);
  EXPECT_EQ(data::read_file(out("damaged") + "/metrics.jsonl"), metrics);
  // The intact state still resumes.
  fs::copy_file(intact, state, fs::copy_options::overwrite_existing);
  EXPECT_TRUE(run(out("damaged"), {"output.resume=true"})["finished"].get<bool>());
}

TEST_F(PretrainTest, RefusesToOverwriteAnExistingRun) {
  run(out("once"), {"train.epochs=2", "run.stop_after_steps=1"});
  const auto before = fs::last_write_time(out("once") + "/results.json");
  EXPECT_THAT(error_of([&] { run(out("once")); }),
              AllOf(HasSubstr(out("once")), HasSubstr("resume = true"), HasSubstr("overwrite = true")));
  EXPECT_EQ(fs::last_write_time(out("once") + "/results.json"), before);
  EXPECT_THAT(error_of([&] { run(out("once"), {"output.overwrite=true", "output.resume=true"}); }),
              HasSubstr("choose one"));
  // An overwrite that fails its checks leaves the old run in place.
  EXPECT_THAT(error_of([&] { run(out("once"), {"output.overwrite=true", "train.batch_size=5000"}); }),
              HasSubstr("batch_size = 5000"));
  EXPECT_EQ(fs::last_write_time(out("once") + "/results.json"), before);
  // overwrite = true starts afresh: the log holds the new run's one complete epoch, not the
  // old run's partial one.
  EXPECT_TRUE(run(out("once"), {"output.overwrite=true", "train.epochs=1", "train.warmup_epochs=0"})["finished"]);
  const std::vector<nlohmann::json> epochs = epoch_records(out("once") + "/metrics.jsonl");
  ASSERT_EQ(epochs.size(), 1u);
  EXPECT_TRUE(epochs[0]["complete"].get<bool>());
}

// A run that fails on its data before logging anything leaves no metrics.jsonl
// behind: the folder takes the next run without overwrite = true.
TEST_F(PretrainTest, RunFailingOnItsDataLeavesNoLog) {
  const std::string image = images_.path() + "/train/bright_bottom/5.png";
  const std::vector<uint8_t> intact = data::read_file(image);
  data::write_file(image, "not an image");
  EXPECT_THAT(error_of([&] { run(out("bad_data")); }), HasSubstr("5.png"));
  EXPECT_FALSE(fs::exists(out("bad_data") + "/metrics.jsonl"));
  data::write_file(image, intact.data(), intact.size());
  EXPECT_TRUE(run(out("bad_data"), {"train.epochs=1", "train.warmup_epochs=0"})["finished"].get<bool>());
}

// A model and an AdamW over its parameters after `steps` updates on random data.
struct Trained {
  std::unique_ptr<VisionTransformer> model;
  std::unique_ptr<Optimizer> optimizer;
};

Trained trained(int steps) {
  VitConfig config = vit_preset("vit_cifar_tiny_patch4_32");
  config.img_size = 8;
  config.embed_dim = 8;
  config.num_heads = 2;
  config.mlp_hidden = 16;
  config.depth = 1;
  config.num_classes = 3;
  Trained t{std::make_unique<VisionTransformer>(config, 5), nullptr};
  std::vector<Tensor> params;
  for (auto& [name, p] : t.model->named_parameters()) params.push_back(p.set_requires_grad(true));
  t.optimizer = make_adamw(decay_groups(params, 0.05), {1e-2});
  Rng rng(9);
  for (int i = 0; i < steps; ++i) {
    Tensor images = Tensor::randn({4, 3, 8, 8}, rng);
    Tensor labels = Tensor::from_vector<int64_t>({0, 1, 2, 1}, {4});
    Tensor loss = cross_entropy(t.model->forward(images), labels);
    t.optimizer->zero_grad();
    loss.backward();
    t.optimizer->step();
  }
  return t;
}

TEST(PretrainCheckpoint, TrainStateRoundTripsTheOptimizerAndProgress) {
  const data::TempDir dir;
  const std::string path = dir.path() + "/train_state.safetensors";
  Trained source = trained(3);
  save_train_state(path, *source.optimizer, {{"step", 3}, {"best_top1", 0.25}});
  Trained target = trained(0);
  const nlohmann::json progress = load_train_state(path, *target.optimizer);
  EXPECT_EQ(progress["step"], 3);
  EXPECT_EQ(progress["best_top1"], 0.25);
  const NamedTensors saved = source.optimizer->state(), loaded = target.optimizer->state();
  ASSERT_EQ(saved.size(), loaded.size());
  for (size_t i = 0; i < saved.size(); ++i) {
    EXPECT_EQ(saved[i].first, loaded[i].first);
    EXPECT_TRUE(same_bytes(saved[i].second, loaded[i].second)) << saved[i].first;
  }
  EXPECT_GT(saved.size(), 2u);
  // Not a training state: the error names the file.
  save_safetensors(dir.path() + "/other.safetensors", {{"x", Tensor::ones({2})}});
  EXPECT_THAT(error_of([&] { load_train_state(dir.path() + "/other.safetensors", *target.optimizer); }),
              AllOf(HasSubstr("other.safetensors"), HasSubstr("not a training state")));
  // Progress that is not a JSON object.
  save_train_state(path, *source.optimizer, nlohmann::json::array({3}));
  EXPECT_EQ(error_of([&] { load_train_state(path, *target.optimizer); }),
            path + ": metadata 'progress' is [3], not a JSON object");
}

TEST(PretrainCheckpoint, InterruptedWriteLeavesThePreviousCheckpoint) {
  const data::TempDir dir;
  const std::string checkpoint = dir.path() + "/checkpoint";
  Trained first = trained(2);
  save_checkpoint(checkpoint, *first.model, *first.optimizer, {{"step", 2}});
  // The next save dies after writing the new model but before the train state.
  Trained later = trained(5);
  EXPECT_THROW(write_directory_atomically(checkpoint,
                                          [&](const std::string& staging) {
                                            save_vit(*later.model, staging);
                                            fail("disk full");
                                          }),
               Error);
  Trained restored = trained(0);
  EXPECT_EQ(load_checkpoint_into(find_complete_directory(checkpoint), *restored.model, *restored.optimizer)["step"], 2);
  const NamedTensors expected = first.model->named_parameters(), got = restored.model->named_parameters();
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_TRUE(same_bytes(expected[i].second, got[i].second)) << expected[i].first;
  }
  // Killed between the two renames: only checkpoint.previous is complete, and is found.
  fs::rename(checkpoint, checkpoint + ".previous");
  EXPECT_EQ(find_complete_directory(checkpoint), checkpoint + ".previous");
  save_checkpoint(checkpoint, *later.model, *later.optimizer, {{"step", 5}});
  EXPECT_EQ(find_complete_directory(checkpoint), checkpoint);
  EXPECT_FALSE(fs::exists(checkpoint + ".previous"));
  EXPECT_FALSE(fs::exists(checkpoint + ".partial"));
  EXPECT_EQ(find_complete_directory(dir.path() + "/none"), "");
}

// The shipped configs read without an unknown key, and resume as the README
// says (tests run from the repository root).
TEST(PretrainConfig, ShippedConfigsAreValidAndResumable) {
  for (const char* path : {"configs/pretrain_tiny.ini", "configs/pretrain_cifar10.ini"}) {
    Config config = Config::load(path);
    config.apply_override("output.resume=true");
    EXPECT_FALSE(PretrainSettings::from_config(config).overwrite) << path;  // (with resume: an error)
    config.check_all_used();
  }
}

TEST_F(PretrainTest, ConfigErrorsNameTheKeyAndValue) {
  auto settings_error = [&](const std::vector<std::string>& overrides) {
    return error_of([&] { PretrainSettings::from_config(config(out("bad"), overrides)); });
  };
  // A value from an override is named as one (not as the file's).
  EXPECT_THAT(settings_error({"train.epochs=0"}), HasSubstr("<override>: [train] epochs = '0' must be >= 1"));
  EXPECT_THAT(settings_error({"train.warmup_epochs=2"}),
              HasSubstr("<override>: [train] warmup_epochs = 2 must be smaller than epochs = 2"));
  EXPECT_THAT(settings_error({"output.resume=true", "output.overwrite=true"}),
              HasSubstr("<override>: [output] overwrite and resume are both true"));
  EXPECT_THAT(settings_error({"train.label_smoothing=1.5"}),
              HasSubstr("[train] label_smoothing = '1.5' must be in [0, 1)"));
  EXPECT_THAT(settings_error({"run.device=gpu"}), AllOf(HasSubstr("<override>: [run] device"), HasSubstr("'gpu'")));
  EXPECT_THAT(settings_error({"run.precision=fp8"}), AllOf(HasSubstr("precision"), HasSubstr("fp8")));
  EXPECT_THAT(settings_error({"data.mean=0.5,0.5"}), HasSubstr("<override>: [data] mean has 2 values"));
  EXPECT_THAT(settings_error({"model.preset=vit_huge"}),
              AllOf(HasSubstr("<override>: [model] preset"), HasSubstr("vit_huge")));
  EXPECT_THAT(settings_error({"model.num_heads=3"}), AllOf(HasSubstr("[model]"), HasSubstr("num_heads 3")));
  EXPECT_THAT(settings_error({"data.crop_padding=8"}), HasSubstr("<override>: [data] crop_padding = 8"));
  EXPECT_THAT(error_of([&] { run(out("bad"), {"run.precision=bf16"}); }),
              HasSubstr("precision bf16 needs a GPU (device cpu"));
  EXPECT_THAT(error_of([&] { run(out("bad"), {"train.epoch=3"}); }), HasSubstr("did you mean 'epochs'"));
  EXPECT_THAT(error_of([&] { run(out("bad"), {"model.num_classes=5"}); }),
              AllOf(HasSubstr("num_classes = 5"), HasSubstr("has 2 classes")));
  EXPECT_FALSE(fs::exists(out("bad") + "/checkpoint"));
}

}  // namespace
}  // namespace engine

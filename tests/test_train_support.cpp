// The training runs' support code: checkpoint folders replaced as a whole and
// their train state files, the JSONL metrics log and its continuation on
// resume, and the shuffled batch stream with its settings.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/files.h"
#include "engine/config.h"
#include "engine/safetensors.h"
#include "tests/expect_error.h"
#include "train/batch_stream.h"
#include "train/checkpoint.h"
#include "train/metrics.h"

namespace engine {
namespace {

namespace fs = std::filesystem;
using testing::error_of;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A write for write_directory_atomically that puts one file, `name` holding
// `text`, into the staging folder.
std::function<void(const std::string&)> writes(const std::string& name, const std::string& text) {
  return [=](const std::string& staging) { data::write_file(staging + "/" + name, text); };
}

// ---- checkpoint folders ----

// The staging folder is made empty for the write, also where a killed save
// left one behind with its files.
TEST(CheckpointFolder, WriteStartsFromAnEmptyStagingFolder) {
  const data::TempDir dir;
  const std::string checkpoint = dir.path() + "/checkpoint";
  fs::create_directories(checkpoint + ".partial");
  data::write_file(checkpoint + ".partial/stale.txt", "from a killed save");
  std::vector<std::string> found;
  write_directory_atomically(checkpoint, [&](const std::string& staging) {
    for (const auto& entry : fs::directory_iterator(staging)) found.push_back(entry.path().filename().string());
    data::write_file(staging + "/model.txt", "step 4");
  });
  EXPECT_EQ(found, std::vector<std::string>{});
  EXPECT_EQ(read_text(checkpoint + "/model.txt"), "step 4");
  EXPECT_FALSE(fs::exists(checkpoint + "/stale.txt"));
  EXPECT_FALSE(fs::exists(checkpoint + ".partial"));
}

// Killed after the new folder moved in but before the old one was deleted:
// both are complete, the newer one is the one found, and the next save
// replaces it as usual.
TEST(CheckpointFolder, BothVersionsLeftTheNewerIsFoundAndTheNextSaveSucceeds) {
  const data::TempDir dir;
  const std::string checkpoint = dir.path() + "/checkpoint";
  write_directory_atomically(checkpoint, writes("step.txt", "2"));
  fs::create_directories(checkpoint + ".previous");
  data::write_file(checkpoint + ".previous/step.txt", "1");
  EXPECT_EQ(find_complete_directory(checkpoint), checkpoint);
  write_directory_atomically(checkpoint, writes("step.txt", "3"));
  EXPECT_EQ(read_text(checkpoint + "/step.txt"), "3");
  EXPECT_FALSE(fs::exists(checkpoint + ".previous"));
  // A file in the checkpoint's place is not a complete version.
  data::write_file(dir.path() + "/file", "x");
  EXPECT_EQ(find_complete_directory(dir.path() + "/file"), "");
}

// A folder named with a trailing slash is the same folder: its staging and
// previous copies are siblings, not children.
TEST(CheckpointFolder, TrailingSlashNamesTheSameFolder) {
  const data::TempDir dir;
  const std::string checkpoint = dir.path() + "/checkpoint";
  write_directory_atomically(checkpoint + "/", writes("step.txt", "1"));
  write_directory_atomically(checkpoint + "/", writes("step.txt", "2"));
  EXPECT_EQ(read_text(checkpoint + "/step.txt"), "2");
  std::vector<std::string> inside;
  for (const auto& entry : fs::directory_iterator(checkpoint)) inside.push_back(entry.path().filename().string());
  EXPECT_EQ(inside, std::vector<std::string>{"step.txt"});
  EXPECT_EQ(find_complete_directory(checkpoint + "/"), checkpoint);
}

// Every name a save can leave beside the run's outputs, so that
// prepare_out_dir removes (or refuses) all of them.
TEST(CheckpointFolder, AtomicNamesCoverTheStagingAndPreviousFolders) {
  EXPECT_EQ(atomic_directory_names("checkpoint"),
            (std::vector<std::string>{"checkpoint", "checkpoint.partial", "checkpoint.previous"}));
}

// ---- train state files ----

// A tiny model and an AdamW over its (named) parameters, never stepped.
struct TinyOptimizer {
  VisionTransformer model;
  std::unique_ptr<Optimizer> optimizer;

  static VitConfig config() {
    VitConfig c;
    c.img_size = 4;
    c.patch_size = 2;
    c.embed_dim = 8;
    c.depth = 1;
    c.num_heads = 2;
    c.mlp_hidden = 16;
    c.num_classes = 3;
    return c;
  }
  TinyOptimizer() : model(config(), 1) {
    std::vector<Tensor> params;
    for (auto& [name, p] : model.named_parameters()) params.push_back(p.set_requires_grad(true));
    optimizer = make_adamw(decay_groups(params, 0.05), {});
  }
};

// A file that is not a train state, or one whose progress is missing or not
// JSON, or whose optimizer state does not fit: one error naming the file.
TEST(TrainState, DamagedFilesAreErrorsNamingTheFile) {
  const data::TempDir dir;
  const std::string path = dir.path() + "/train_state.safetensors";
  TinyOptimizer target;
  const NamedTensors step = {{"step", Tensor::from_vector<int64_t>({1}, {1})}};

  save_safetensors(path, step, {{"format", "engine.other.v1"}, {"progress", "{}"}});
  EXPECT_EQ(error_of([&] { read_train_progress(path); }),
            path + ": not a training state (metadata 'format' should be 'engine.train_state.v1')");

  save_safetensors(path, step, {{"format", "engine.train_state.v1"}});
  EXPECT_EQ(error_of([&] { read_train_progress(path); }), path + ": metadata has no 'progress' entry");

  save_safetensors(path, step, {{"format", "engine.train_state.v1"}, {"progress", "{\"step\": "}});
  EXPECT_EQ(error_of([&] { read_train_progress(path); }).rfind(path + ": ", 0), 0u);

  // The progress reads, but the optimizer state names no parameter of this model.
  save_safetensors(path, {{"step", Tensor::from_vector<int64_t>({1}, {1})}, {"other.exp_avg", Tensor::ones({2})}},
                   {{"format", "engine.train_state.v1"}, {"progress", "{\"step\": 1}"}});
  EXPECT_EQ(read_train_progress(path)["step"], 1);
  const std::string error = error_of([&] { load_train_state(path, *target.optimizer); });
  EXPECT_EQ(error.rfind(path + ": ", 0), 0u) << error;
  EXPECT_NE(error.find("other.exp_avg"), std::string::npos) << error;
}

// ---- metrics log ----

std::vector<nlohmann::json> log_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

// Each record is one line, with "time", on disk as soon as it is written
// (a crashed run keeps its history); the position counts its bytes.
TEST(MetricsLog, EachRecordIsALineOnDiskAtOnce) {
  const data::TempDir dir;
  const std::string path = dir.path() + "/metrics.jsonl";
  MetricsLog log(path);
  log.write({{"step", 3}, {"loss", 0.25}});
  log.write({{"step", 4}});
  const std::vector<nlohmann::json> lines = log_lines(path);  // the log still open
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["loss"], 0.25);
  EXPECT_EQ(lines[1]["step"], 4);
  EXPECT_GE(lines[0]["time"].get<double>(), 0.0);
  EXPECT_GE(lines[1]["time"].get<double>(), lines[0]["time"].get<double>());
  EXPECT_EQ(log.position().bytes, static_cast<int64_t>(fs::file_size(path)));
  EXPECT_GE(log.position().seconds, lines[1]["time"].get<double>());
}

// A resumed run's log: what the crashed run wrote after the saved position
// is cut off, the clock carries on from the saved time, and the position
// keeps counting from there (so that a second resume cuts at the right byte).
TEST(MetricsLog, ContinuesFromASavedPosition) {
  const data::TempDir dir;
  const std::string path = dir.path() + "/metrics.jsonl";
  LogPosition saved;
  {
    MetricsLog log(path);
    log.write({{"step", 1}});
    saved = log.position();
    log.write({{"step", 2}});  // after the checkpoint: lost with the crash
  }
  saved.seconds = 1000.0;  // as if the first run had run that long
  {
    MetricsLog log(path, saved);
    EXPECT_EQ(log.position().bytes, saved.bytes);
    EXPECT_GE(log.position().seconds, 1000.0);
    log.write({{"step", 2}, {"resumed", true}});
    EXPECT_EQ(log.position().bytes, static_cast<int64_t>(fs::file_size(path)));
  }
  const std::vector<nlohmann::json> lines = log_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["step"], 1);
  EXPECT_EQ(lines[1]["resumed"], true);
  EXPECT_GE(lines[1]["time"].get<double>(), 1000.0);
  // The whole file is a valid position too (a run that logged nothing after its checkpoint).
  const LogPosition end{static_cast<int64_t>(fs::file_size(path)), 0.0};
  { MetricsLog log(path, end); }
  EXPECT_EQ(log_lines(path).size(), 2u);
}

TEST(MetricsLog, ContinuingAMissingOrShorterLogIsAnError) {
  const data::TempDir dir;
  const std::string path = dir.path() + "/metrics.jsonl";
  testing::expect_error_mentioning([&] { MetricsLog log(path, {10, 0.0}); }, {path, "no such file"});
  data::write_file(path, "{}\n");
  testing::expect_error_mentioning([&] { MetricsLog log(path, {10, 0.0}); }, {path, "byte 10", "only 3 bytes"});
  EXPECT_EQ(read_text(path), "{}\n");
}

TEST(MetricsLog, ResultsJsonIsPrettyPrintedAndReplacedWhole) {
  const data::TempDir dir;
  const std::string path = dir.path() + "/results.json";
  data::write_file(path, "an earlier run's results");
  const nlohmann::json results = {{"top1", 0.8125}, {"layers", {3, 5}}};
  write_json_atomic(path, results);
  EXPECT_EQ(read_text(path), results.dump(2) + "\n");
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir.path())) names.push_back(entry.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"results.json"});  // no temporary left
}

// ---- the batch stream ----

// Item i: a 2 x 2 image whose left column is 2i + 1 and right column 2i + 2
// (so that a flip shows), labelled i.
class Numbered : public data::Dataset {
 public:
  explicit Numbered(size_t count) : count_(count) {}
  size_t size() const override { return count_; }
  int num_classes() const override { return static_cast<int>(count_); }
  data::Sample get(size_t i) const override {
    data::Image image(2, 2, 3);
    for (int y = 0; y < 2; ++y) {
      for (int x = 0; x < 2; ++x) {
        for (int c = 0; c < 3; ++c) image.at(y, x, c) = static_cast<uint8_t>(2 * i + 1 + x);
      }
    }
    return {image, label(i)};
  }
  int64_t label(size_t i) const override { return static_cast<int64_t>(i); }
  std::string name(size_t i) const override { return std::to_string(i); }

 private:
  size_t count_;
};

// The model's view of raw pixels: no resize, values 0..255 as they are.
Preprocess raw_pixels() {
  Preprocess p;
  p.input_size = 2;
  p.crop_pct = 1.0;
  for (int c = 0; c < 3; ++c) p.mean[c] = 0.0, p.std[c] = 1.0 / 255.0;
  return p;
}

struct Drawn {
  std::vector<int64_t> labels;
  int flipped = 0;
};

// `batches` batches of 4 from a stream over Numbered(10), checking that each
// image is its label's, as it is or flipped.
Drawn draw(uint64_t seed, int batches) {
  DataSettings settings;
  settings.batch_size = 4;
  settings.workers = 0;
  const Numbered dataset(10);
  BatchStream stream(dataset, raw_pixels(), settings, seed);
  Drawn drawn;
  for (int b = 0; b < batches; ++b) {
    Tensor images, labels;
    stream.next(&images, &labels);
    EXPECT_EQ(images.shape(), (Shape{4, 3, 2, 2}));
    const Tensor pixels = images.contiguous();
    for (int64_t i = 0; i < 4; ++i) {
      const int64_t label = labels.contiguous().data<int64_t>()[i];
      const float* image = pixels.data<float>() + i * 12;
      const long left = std::lround(image[0]), right = std::lround(image[1]);
      EXPECT_EQ(std::min(left, right), 2 * label + 1) << "label " << label;
      EXPECT_EQ(std::max(left, right), 2 * label + 2) << "label " << label;
      drawn.flipped += left > right;
      drawn.labels.push_back(label);
    }
  }
  return drawn;
}

// Whole batches only (10 images give 2 batches of 4 an epoch, each image at
// most once), shuffled anew each epoch from the seed, half of them flipped.
TEST(BatchStream, WholeShuffledBatchesDrawnFromTheSeed) {
  const Drawn drawn = draw(7, 10);  // 5 epochs
  std::vector<std::vector<int64_t>> epochs;
  for (size_t e = 0; e < 5; ++e) {
    std::vector<int64_t> epoch(drawn.labels.begin() + 8 * e, drawn.labels.begin() + 8 * (e + 1));
    EXPECT_EQ(std::set<int64_t>(epoch.begin(), epoch.end()).size(), 8u) << "epoch " << e;
    epochs.push_back(epoch);
  }
  EXPECT_NE(epochs[0], (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7})) << "not shuffled";
  EXPECT_EQ(std::set<std::vector<int64_t>>(epochs.begin(), epochs.end()).size(), 5u) << "an epoch repeats an order";
  EXPECT_GT(drawn.flipped, 5);
  EXPECT_LT(drawn.flipped, 35);
  EXPECT_EQ(draw(7, 4).labels, std::vector<int64_t>(drawn.labels.begin(), drawn.labels.begin() + 16));
  EXPECT_NE(draw(8, 4).labels, std::vector<int64_t>(drawn.labels.begin(), drawn.labels.begin() + 16));
}

// [data] as the training tools read it, and the evaluation they run between:
// four training batches at a time, at most 256 images, on the test_limit.
TEST(DataSettings, EvaluationTakesTheTestLimitAndLargerBatches) {
  DataSettings s;
  s.read_data_settings(Config::parse("[data]\npath = d\ntest_limit = 500\nbatch_size = 100\nworkers = 3\n"));
  EXPECT_EQ(s.data, "d");
  EXPECT_EQ(s.test_limit, 500);
  const EvalOptions eval = s.eval_options();
  EXPECT_EQ(eval.limit, 500);
  EXPECT_EQ(eval.batch_size, 256);
  EXPECT_EQ(eval.num_workers, 3);
  s.batch_size = 16;
  EXPECT_EQ(s.eval_options().batch_size, 64);
}

// train_distill's schedule: warmup over the fraction of the run's steps
// (rounded down), the cosine ending one step past the last.
TEST(DataSettings, WarmupCoversTheFractionOfTheStepsRoundedDown) {
  const WarmupCosineSchedule schedule = warmup_cosine(0.5, 9, 0.5);
  EXPECT_EQ(schedule.warmup_steps, 4);
  EXPECT_EQ(schedule.total_steps, 10);
  EXPECT_EQ(schedule.base_lr, 0.5);
  EXPECT_EQ(warmup_cosine(0.5, 4, 1.0).warmup_steps, 4);  // every step a warmup step, still a schedule
  EXPECT_NO_THROW(warmup_cosine(0.5, 4, 1.0).validate());
}

// An output folder named by a link to nothing is refused before anything is written.
TEST(DataSettings, OutputFolderThatIsALinkToNothingIsRefused) {
  const data::TempDir dir;
  const std::string link = dir.path() + "/out";
  fs::create_symlink(dir.path() + "/missing", link);
  testing::expect_error_mentioning([&] { check_out_dir(link); }, {link, "link to nothing"});
  testing::expect_error_mentioning([&] { prepare_out_dir(link, true, {"results.json"}); }, {"link to nothing"});
  EXPECT_FALSE(fs::exists(dir.path() + "/missing"));
}

}  // namespace
}  // namespace engine

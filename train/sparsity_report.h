// The analyze_sparsity tool's core: runs a ViT over images, accumulates the
// attention sparsity of every block (train/sparsity.h), keeps the class-token
// attention maps of the first few images, and writes the report folder
// (sparsity.json, sparsity.csv, layers.svg, cls_attention_img{k}.png, index.html).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/files.h"
#include "data/image.h"
#include "models/vit.h"
#include "train/metrics.h"
#include "train/sparsity.h"

namespace engine {

// The class token's attention over the patch grid in every layer, for one image.
struct ClsAttentionMaps {
  std::string name;                        // the dataset item, or "image <k>"
  data::Image input;                       // the model's input, un-normalised to 8-bit RGB
  std::vector<std::vector<float>> layers;  // per layer: grid x grid (row-major), mean over heads
};

class SparsityAnalysis {
 public:
  // Keeps the class-token maps of the first `heatmap_images` images it sees. The model
  // must outlive the analysis.
  explicit SparsityAnalysis(VisionTransformer& model, int64_t heatmap_images = 4);

  // images: [B, C, H, W], normalised as the model expects (moved to the model's device).
  // names: empty or one per image. keep_masks: empty or one uint8 [B, N] per layer
  // (see SparsityAccumulator::add). For an A-ViT (config.halting set) the model's own
  // halting masks are used instead: statistics over the tokens still active.
  void add_batch(const Tensor& images, const std::vector<std::string>& names = {},
                 const std::vector<Tensor>& keep_masks = {});

  const SparsityAccumulator& stats() const { return stats_; }
  const std::vector<ClsAttentionMaps>& heatmaps() const { return heatmaps_; }
  const VitConfig& config() const { return model_.config; }
  int64_t images() const { return images_; }
  // Layer indices from the sparsest to the densest by k90 (ties: lower index first).
  std::vector<int64_t> ranking() const;

 private:
  void keep_heatmap(const Tensor& images, int64_t b, const std::string& name, const std::vector<Tensor>& probs,
                    const std::vector<Tensor>& keep_masks);

  VisionTransformer& model_;
  int64_t heatmap_images_;
  SparsityAccumulator stats_;
  std::vector<ClsAttentionMaps> heatmaps_;
  int64_t images_ = 0;
};

struct SparsityRunOptions {
  int64_t num_images = 0;  // 0: the whole dataset
  int64_t batch_size = 64;
  int num_workers = 2;
  bool progress = true;
  MetricsLog* log = nullptr;  // if set: one line per batch (images so far, img/s)
};

// Feeds `dataset` through the model's eval preprocessing into `analysis`, in a fixed
// pseudo-random order (seed 0), so that a num_images subset spreads over the classes.
// Returns the elapsed seconds.
double analyze_dataset(SparsityAnalysis& analysis, const data::Dataset& dataset, const SparsityRunOptions& options);

// Where the numbers came from, recorded in the report.
struct SparsityRunInfo {
  std::string model, data, device;
  double seconds = 0;
};

nlohmann::ordered_json sparsity_json(const SparsityAnalysis& analysis, const SparsityRunInfo& info);
// One row per layer and per (layer, head), each for all rows and for the class-token row.
std::string sparsity_csv(const SparsityAnalysis& analysis);
// The per-layer table and the ranking, for the terminal.
std::string sparsity_table(const SparsityAnalysis& analysis);

// The report folder, staged. The constructor checks OUT (it must not exist
// unless overwrite, and then only an earlier report or an empty folder may be
// there) and makes the staging folder OUT.tmp-<pid>-XXXXXX at once, so that a
// place it cannot write fails before a long run and the run's log (log_path())
// has a home. commit() writes every report file into it and puts it in place of
// OUT (an existing OUT is replaced only then); a run that fails before leaves
// OUT untouched, and the staging folder (a data::TempDir) goes with the object.
// (A run killed by a signal cannot remove it: the next run on OUT removes such
// folders once their process is gone.)
class SparsityReportDir {
 public:
  SparsityReportDir(const std::string& out_dir, bool overwrite);
  std::string log_path() const;  // metrics.jsonl in the staging folder
  void commit(const SparsityAnalysis& analysis, const SparsityRunInfo& info);

 private:
  std::string out_;
  data::TempDir staging_;
};

// The report at once (SparsityReportDir, then commit).
void write_sparsity_report(const SparsityAnalysis& analysis, const SparsityRunInfo& info, const std::string& out_dir,
                           bool overwrite);

}  // namespace engine

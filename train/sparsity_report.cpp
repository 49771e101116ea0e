#include "train/sparsity_report.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <filesystem>

#include "data/loader.h"
#include "engine/autograd.h"
#include "engine/safetensors.h"
#include "models/avit.h"
#include "train/evaluate.h"
#include "train/progress.h"
#include "train/sparsity_pictures.h"

namespace engine {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;  // keys in the order written

namespace {

Json metrics_json(const SparsityMetrics& m) {
  Json j = {{"rows", m.rows}};
  for (const auto& [name, field] : SparsityMetrics::fields()) j[name] = m.*field;
  return j;
}

Json stats_json(int64_t index, const SparsityMetrics& m) {
  Json j = {{"index", index}};
  j.update(metrics_json(m));
  return j;
}

std::string csv_row(const std::string& layer, const std::string& head, const char* rows_of, const SparsityMetrics& m) {
  std::string line = fmt::format("{},{},{},{}", layer, head, rows_of, m.rows);
  for (const auto& [name, field] : SparsityMetrics::fields()) line += fmt::format(",{}", m.*field);
  return line + "\n";
}

// OUT without trailing slashes, so that OUT.tmp-<pid> is a sibling, not a child.
std::string clean_dir(const std::string& out_dir) {
  check(!out_dir.empty(), "no output folder given");
  std::string dir = fs::path(out_dir).lexically_normal().string();
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

void rename_or_fail(const fs::path& from, const fs::path& to) {
  std::error_code error;
  fs::rename(from, to, error);
  check(!error, "cannot rename '{}' to '{}': {}", from.string(), to.string(), error.message());
}

// Fails, naming it, when OUT exists and overwrite is off, or when overwrite
// would delete something that is not an earlier report.
void check_output_dir(const std::string& dir, bool overwrite) {
  if (!fs::exists(dir)) return;
  check(overwrite,
        "output folder '{}' already exists: choose another one, or pass --overwrite ([output] overwrite = true) "
        "to replace it",
        dir);
  // Replacing deletes the folder: only an earlier report (or nothing) may be there.
  const bool empty_folder = fs::is_directory(dir) && fs::is_empty(dir);
  check(empty_folder || fs::exists(fs::path(dir) / "sparsity.json"),
        "--overwrite replaces an earlier sparsity report, but '{}' is not one (no sparsity.json in it): choose "
        "another output folder",
        dir);
}

// The folder that holds OUT, its staging folders and its replaced copy.
std::string parent_folder(const fs::path& out) { return out.has_parent_path() ? out.parent_path().string() : "."; }

// This process's staging folders of OUT are OUT.tmp-<pid>-XXXXXX (the suffix
// is data::TempDir's).
std::string staging_prefix(const fs::path& out) {
  return out.filename().string() + ".tmp-" + std::to_string(getpid()) + "-";
}

// Removes the staging folders that interrupted runs left beside OUT: those
// whose process no longer exists.
void remove_stale_staging(const fs::path& out) {
  const std::string prefix = out.filename().string() + ".tmp-";
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(parent_folder(out), error)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const size_t dash = name.find('-', prefix.size());
    const std::string pid = name.substr(prefix.size(), dash == std::string::npos ? 0 : dash - prefix.size());
    const bool ours = !pid.empty() && pid.size() < 10 &&
                      std::all_of(pid.begin(), pid.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (ours && entry.is_directory(error) && kill(std::stoi(pid), 0) != 0 && errno == ESRCH) {
      fs::remove_all(entry.path(), error);
    }
  }
}

// OUT, checked (check_output_dir), with its parent folder made and the
// staging folders of killed runs removed: ready for its own staging folder.
std::string prepared_out_dir(const std::string& out_dir, bool overwrite) {
  const std::string dir = clean_dir(out_dir);
  check_output_dir(dir, overwrite);
  const fs::path out = dir;
  std::error_code error;
  if (out.has_parent_path()) fs::create_directories(out.parent_path(), error);
  check(!error, "cannot create the folder of '{}': {}", dir, error.message());
  remove_stale_staging(out);
  return dir;
}

void write_report_files(const SparsityAnalysis& analysis, const SparsityRunInfo& info, const fs::path& dir) {
  write_file_atomic((dir / "sparsity.json").string(), sparsity_json(analysis, info).dump(2) + "\n");
  write_file_atomic((dir / "sparsity.csv").string(), sparsity_csv(analysis));
  write_file_atomic((dir / "layers.svg").string(), layers_svg(analysis));
  for (size_t k = 0; k < analysis.heatmaps().size(); ++k) {
    data::write_png(cls_attention_picture(analysis.heatmaps()[k], analysis.config().grid()),
                    (dir / heatmap_file_name(k)).string());
  }
  write_file_atomic((dir / "index.html").string(), index_html(analysis, info));
}

}  // namespace

SparsityAnalysis::SparsityAnalysis(VisionTransformer& model, int64_t heatmap_images)
    : model_(model),
      heatmap_images_(heatmap_images),
      stats_(model.config.depth, model.config.num_heads, model.config.class_token ? 0 : -1) {}

void SparsityAnalysis::add_batch(const Tensor& images, const std::vector<std::string>& names,
                                 const std::vector<Tensor>& keep_masks) {
  const int64_t batch = images.size(0), depth = model_.config.depth;
  check(names.empty() || static_cast<int64_t>(names.size()) == batch, "sparsity: {} names for {} images",
        names.size(), batch);
  check(keep_masks.empty() || static_cast<int64_t>(keep_masks.size()) == depth,
        "sparsity: {} keep masks for {} layers", keep_masks.size(), depth);
  NoGradGuard no_grad;
  ForwardTrace trace;
  trace.want_probs = true;
  std::vector<Tensor> masks = keep_masks;
  if (model_.config.halting) {
    // An A-ViT: statistics over the tokens still active entering each layer.
    HaltingTrace halting;
    avit_forward_tokens(model_, images.to(model_.device()), {}, &halting, &trace);
    masks.clear();
    for (const Tensor& active : halting.active) masks.push_back(active.to(DType::U8));
  } else {
    model_.forward_tokens(images.to(model_.device()), {}, &trace);
  }

  // The statistics are computed where the probabilities are (on a GPU, only
  // their per-head sums come to the host); the pictures copy them.
  std::vector<Tensor> probs(depth);
  for (int64_t i = 0; i < depth; ++i) {
    probs[i] = trace.blocks[i].attn_probs;
    check(probs[i].defined(), "sparsity: block {} has no attention probabilities (mixer '{}')", i,
          model_.blocks[i].mixer->kind());
    stats_.add(i, probs[i], masks.empty() ? Tensor() : masks[i]);
  }
  if (static_cast<int64_t>(heatmaps_.size()) < heatmap_images_) {
    for (Tensor& p : probs) p = p.to(Device::cpu());
    const Tensor cpu_images = images.to(Device::cpu()).to(DType::F32).contiguous();
    for (int64_t b = 0; b < batch && static_cast<int64_t>(heatmaps_.size()) < heatmap_images_; ++b) {
      keep_heatmap(cpu_images, b, names.empty() ? fmt::format("image {}", images_ + b) : names[b], probs, masks);
    }
  }
  images_ += batch;
}

// Mean over heads of the class token's row, at the patch tokens (after the prefix
// tokens); patches a keep mask dropped stay 0.
void SparsityAnalysis::keep_heatmap(const Tensor& images, int64_t b, const std::string& name,
                                    const std::vector<Tensor>& probs, const std::vector<Tensor>& keep_masks) {
  if (!model_.config.class_token) return;
  const int64_t heads = model_.config.num_heads, patches = model_.config.num_patches();
  const int64_t prefix = model_.config.num_prefix_tokens();
  ClsAttentionMaps maps{name, to_rgb_image(images, b, model_.config.preprocess), {}};
  for (size_t i = 0; i < probs.size(); ++i) {
    const Tensor p = probs[i].to(DType::F32).contiguous();
    const int64_t n = p.size(2);
    const float* cls_rows = p.data<float>() + b * heads * n * n;  // head h's class row: h * n * n onwards
    const Tensor mask = keep_masks.empty() ? Tensor() : keep_masks[i].to(Device::cpu()).contiguous();
    const uint8_t* kept = mask.defined() ? mask.data<uint8_t>() + b * n : nullptr;
    std::vector<float> map(patches, 0.0f);
    for (int64_t t = 0; t < patches; ++t) {
      const int64_t token = prefix + t;
      if (kept && !kept[token]) continue;
      for (int64_t h = 0; h < heads; ++h) map[t] += cls_rows[h * n * n + token] / static_cast<float>(heads);
    }
    maps.layers.push_back(std::move(map));
  }
  heatmaps_.push_back(std::move(maps));
}

std::vector<int64_t> SparsityAnalysis::ranking() const {
  std::vector<int64_t> order(stats_.layers());
  for (int64_t i = 0; i < stats_.layers(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return stats_.layer(a).k90 < stats_.layer(b).k90; });
  return order;
}

double analyze_dataset(SparsityAnalysis& analysis, const data::Dataset& dataset, const SparsityRunOptions& options) {
  const int64_t available = static_cast<int64_t>(dataset.size());
  const int64_t total = options.num_images > 0 ? std::min(options.num_images, available) : available;
  const Preprocess& preprocess = analysis.config().preprocess;
  data::LoaderOptions loader_options;
  loader_options.batch_size = static_cast<size_t>(options.batch_size);
  loader_options.num_workers = options.num_workers;
  loader_options.shuffle = true;
  loader_options.height = loader_options.width = static_cast<int>(preprocess.input_size);
  data::DataLoader loader(dataset, eval_transform(preprocess), loader_options);
  loader.start_epoch(0);

  ProgressBar bar("sparsity", total);
  int64_t done = 0;
  for (data::Batch batch; done < total && loader.next(batch);) {
    const int64_t take = std::min<int64_t>(batch.n, total - done);
    batch.images.resize(static_cast<size_t>(take) * batch.c * batch.h * batch.w);
    std::vector<std::string> names;
    for (int64_t i = 0; i < take; ++i) names.push_back(dataset.name(batch.indices[i]));
    analysis.add_batch(Tensor::from_vector(batch.images, {take, batch.c, batch.h, batch.w}), names);
    done += take;
    if (options.progress) bar.update(take);
    if (options.log) {
      options.log->write({{"images", done}, {"images_per_second", per_second(done, bar.elapsed_seconds())}});
    }
  }
  if (options.progress) bar.finish();
  return bar.elapsed_seconds();
}

Json sparsity_json(const SparsityAnalysis& analysis, const SparsityRunInfo& info) {
  const SparsityAccumulator& stats = analysis.stats();
  Json layers = Json::array();
  for (int64_t i = 0; i < stats.layers(); ++i) {
    Json layer = stats_json(i, stats.layer(i));
    layer["heads"] = Json::array();
    for (int64_t h = 0; h < stats.heads(); ++h) {
      Json head = stats_json(h, stats.head(i, h));
      if (stats.has_cls()) head["cls"] = metrics_json(stats.cls_head(i, h));
      layer["heads"].push_back(std::move(head));
    }
    if (stats.has_cls()) layer["cls"] = metrics_json(stats.cls(i));
    layers.push_back(std::move(layer));
  }
  return {{"model", info.model},
          {"data", info.data},
          {"device", info.device},
          {"num_images", analysis.images()},
          {"tokens", analysis.config().num_tokens()},
          {"heads", stats.heads()},
          {"seconds", info.seconds},
          {"images_per_second", per_second(analysis.images(), info.seconds)},
          {"definitions", "docs/SPARSITY.md"},
          {"layers", std::move(layers)},
          {"ranking", analysis.ranking()}};
}

std::string sparsity_csv(const SparsityAnalysis& analysis) {
  const SparsityAccumulator& stats = analysis.stats();
  std::string csv = "layer,head,rows_of,rows";
  for (const auto& [name, field] : SparsityMetrics::fields()) csv += fmt::format(",{}", name);
  csv += "\n";
  for (int64_t i = 0; i < stats.layers(); ++i) {
    const std::string layer = std::to_string(i);
    csv += csv_row(layer, "all", "all", stats.layer(i));
    if (stats.has_cls()) csv += csv_row(layer, "all", "cls", stats.cls(i));
    for (int64_t h = 0; h < stats.heads(); ++h) {
      csv += csv_row(layer, std::to_string(h), "all", stats.head(i, h));
      if (stats.has_cls()) csv += csv_row(layer, std::to_string(h), "cls", stats.cls_head(i, h));
    }
  }
  return csv;
}

std::string sparsity_table(const SparsityAnalysis& analysis) {
  const SparsityAccumulator& stats = analysis.stats();
  std::string table = fmt::format("{:>5} {:>8} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>7}\n", "layer", "entropy",
                                  "ent/lnN", "k50", "k90", "k99", "top1", "gini", "cls_ent", "cls_k90");
  for (int64_t i = 0; i < stats.layers(); ++i) {
    const SparsityMetrics m = stats.layer(i), c = stats.cls(i);
    table += fmt::format("{:>5} {:>8.3f} {:>8.3f} {:>6.1f} {:>6.1f} {:>6.1f} {:>6.3f} {:>6.3f} {:>8.3f} {:>7.1f}\n", i,
                         m.entropy, m.entropy_norm, m.k50, m.k90, m.k99, m.top1_mass, m.gini, c.entropy, c.k90);
  }
  return table + fmt::format("ranking by k90, sparsest first: {}\n", join_indices(analysis.ranking(), " "));
}

SparsityReportDir::SparsityReportDir(const std::string& out_dir, bool overwrite)
    : out_(prepared_out_dir(out_dir, overwrite)), staging_(parent_folder(out_), staging_prefix(out_)) {}

std::string SparsityReportDir::log_path() const { return (fs::path(staging_.path()) / "metrics.jsonl").string(); }

void SparsityReportDir::commit(const SparsityAnalysis& analysis, const SparsityRunInfo& info) {
  write_report_files(analysis, info, staging_.path());
  staging_.use_usual_permissions();  // as readable as the folders that the other tools write
  const fs::path out = out_;
  if (fs::exists(out)) {
    // Replace: move the old folder aside, put the new one in place, then delete the old.
    const fs::path old = out_ + ".old-" + std::to_string(getpid());
    rename_or_fail(out, old);
    rename_or_fail(staging_.path(), out);
    fs::remove_all(old);
  } else {
    rename_or_fail(staging_.path(), out);
  }
  staging_.release();
}

void write_sparsity_report(const SparsityAnalysis& analysis, const SparsityRunInfo& info, const std::string& out_dir,
                           bool overwrite) {
  SparsityReportDir(out_dir, overwrite).commit(analysis, info);
}

}  // namespace engine

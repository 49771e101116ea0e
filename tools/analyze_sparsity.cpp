// ./analyze_sparsity CONFIG.ini [flags]
// ./analyze_sparsity --model PATH --data DIR --out DIR [flags]
// Runs a ViT over images and reports how sparse the softmax attention of every
// layer and head is (entropy, k50/k90/k99, top-k mass, Gini, ...; docs/SPARSITY.md):
// OUT/sparsity.json, sparsity.csv, layers.svg, cls_attention_img{k}.png, index.html,
// and metrics.jsonl (one line per batch).
// Every setting is a config key and a flag; flags given with a config override it.
#include "data/open_dataset.h"
#include "engine/cli.h"
#include "engine/config.h"
#include "models/vit_checkpoint.h"
#include "train/sparsity_report.h"

using namespace engine;

namespace {

struct Setting {
  enum Kind { Text, Integer, Switch };
  const char* flag;
  const char* section;
  const char* key;
  const char* help;
  Kind kind;
};

const Setting kSettings[] = {
    {"model", "model", "path", "checkpoint: .safetensors, index.json or a folder with config.json", Setting::Text},
    {"config", "model", "config", "architecture config.json (default: beside the checkpoint)", Setting::Text},
    {"data", "data", "path", "ImageFolder root, CIFAR-10 binary folder, or an archive of either (see --subdir)",
     Setting::Text},
    {"subdir", "data", "subdir", "folder inside --data (e.g. cifar10/test), or the CIFAR-10 binary split (test)",
     Setting::Text},
    {"synsets", "data", "synsets", "class list, line i = class i (ImageNet: the 1000 sorted synsets)", Setting::Text},
    {"num-images", "data", "num_images", "images to analyse, 0 = all (default 0)", Setting::Integer},
    {"batch", "data", "batch_size", "batch size (default 64)", Setting::Integer},
    {"workers", "data", "workers", "image loading threads (default 2)", Setting::Integer},
    {"device", "run", "device", "cpu, cuda or auto (default auto)", Setting::Text},
    {"out", "output", "dir", "report folder; must not exist unless --overwrite", Setting::Text},
    {"overwrite", "output", "overwrite", "replace an existing report folder (once the new one is complete)",
     Setting::Switch},
    {"heatmaps", "output", "heatmap_images", "images with class-token heatmaps (default 4)", Setting::Integer},
};

struct Options {
  std::string model, model_config, data, subdir, synsets, device, out;
  int64_t num_images, batch_size, workers, heatmap_images;
  bool overwrite;
};

// The config file (if any) with the given flags applied on top; flag values are
// type-checked here so that an error names the flag.
Config settings(const Flags& flags) {
  Config config = flags.positional().empty() ? Config::parse("", "<command line>") : Config::load(flags.positional()[0]);
  for (const Setting& s : kSettings) {
    if (!flags.has(s.flag)) continue;
    const std::string value = s.kind == Setting::Integer ? std::to_string(flags.get_int(s.flag))
                              : s.kind == Setting::Switch ? (flags.get_bool(s.flag) ? "true" : "false")
                                                          : flags.get(s.flag);
    config.set(s.section, s.key, value);
  }
  return config;
}

void check_at_least(int64_t value, int64_t minimum, const char* flag, const char* key) {
  check(value >= minimum, "--{} / {} must be at least {}, got {}", flag, key, minimum, value);
}

Options read_options(const Config& config) {
  Options o;
  o.model = config.get_string("model", "path", "");
  o.model_config = config.get_string("model", "config", "");
  o.data = config.get_string("data", "path", "");
  o.subdir = config.get_string("data", "subdir", "");
  o.synsets = config.get_string("data", "synsets", "");
  o.num_images = config.get_int("data", "num_images", 0);
  o.batch_size = config.get_int("data", "batch_size", 64);
  o.workers = config.get_int("data", "workers", 2);
  o.device = config.get_string("run", "device", "auto");
  o.out = config.get_string("output", "dir", "");
  o.overwrite = config.get_bool("output", "overwrite", false);
  o.heatmap_images = config.get_int("output", "heatmap_images", 4);
  config.check_all_used();
  check(!o.model.empty(), "no model given: pass --model PATH or set [model] path (see --help)");
  check(!o.data.empty(), "no images given: pass --data DIR or set [data] path (see --help)");
  check(!o.out.empty(), "no output folder given: pass --out DIR or set [output] dir (see --help)");
  check_at_least(o.num_images, 0, "num-images", "[data] num_images");
  check_at_least(o.batch_size, 1, "batch", "[data] batch_size");
  check_at_least(o.workers, 0, "workers", "[data] workers");
  check_at_least(o.heatmap_images, 0, "heatmaps", "[output] heatmap_images");
  return o;
}

int analyze_sparsity_main(int argc, char** argv) {
  std::vector<FlagSpec> specs;
  for (const Setting& s : kSettings) {
    specs.push_back({s.flag, fmt::format("{} ([{}] {})", s.help, s.section, s.key), "", s.kind == Setting::Switch});
  }
  Flags flags("analyze_sparsity CONFIG.ini [flags]  |  analyze_sparsity --model PATH --data DIR --out DIR [flags]",
              specs, {"CONFIG"});
  if (!flags.parse(argc, argv)) return 0;
  const Options options = read_options(settings(flags));
  SparsityReportDir report(options.out, options.overwrite);  // checked and staged before a long run, not after
  MetricsLog log(report.log_path());

  const Device device = Device::parse(options.device);
  VitLoadOptions load_options;
  load_options.config_path = options.model_config;
  auto model = load_vit(options.model, load_options);
  model->to(device);
  const auto opened = data::open_dataset(options.data, options.subdir, options.synsets);
  const data::LabeledDataset& dataset = *opened;
  const int64_t images = options.num_images > 0 ? std::min<int64_t>(options.num_images, dataset.size()) : dataset.size();
  fmt::print("model {} ({} layers x {} heads, {} tokens) on {}, {} of {} images from {}\n", options.model,
             model->config.depth, model->config.num_heads, model->config.num_tokens(), device.str(), images,
             dataset.size(), dataset.root());

  SparsityAnalysis analysis(*model, options.heatmap_images);
  SparsityRunOptions run_options;
  run_options.num_images = images;
  run_options.batch_size = options.batch_size;
  run_options.num_workers = static_cast<int>(options.workers);
  run_options.log = &log;
  const double seconds = analyze_dataset(analysis, dataset, run_options);
  report.commit(analysis, {options.model, dataset.root(), device.str(), seconds});

  fmt::print("{}", sparsity_table(analysis));
  fmt::print("{} images in {:.1f} s ({:.1f} img/s) on {}; report: {}/index.html\n", analysis.images(), seconds,
             analysis.images() / std::max(seconds, 1e-9), device.str(), options.out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_tool("analyze_sparsity", analyze_sparsity_main, argc, argv); }

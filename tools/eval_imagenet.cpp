// ./eval_imagenet --model PATH --data DIR [--synsets FILE] [--batch N] [--device cpu|cuda]
//                 [--precision fp32|bf16] [--limit N] [--predictions FILE] [--out results.json] [--log metrics.jsonl]
// Top-1/top-5 of a checkpoint on an ImageFolder (ImageNet val/<synset>/*.JPEG with a
// synset list, or any other folder such as the CIFAR-10 test JPEGs) or on CIFAR-10's
// official binary batches (--data cifar-10-binary.tar.gz --subdir test). An A-ViT checkpoint
// is evaluated with halting, tokens really dropped, and its token retention reported.
#include "data/open_dataset.h"
#include "engine/cli.h"
#include "engine/ops/matmul/matmul.h"
#include "engine/safetensors.h"
#include "models/vit_checkpoint.h"
#include "train/evaluate.h"
#include "train/metrics.h"

using namespace engine;

namespace {

int eval_main(int argc, char** argv) {
  Flags flags("eval_imagenet --model PATH --data DIR [flags]",
              {{"model", "checkpoint: .safetensors, index.json or a folder with config.json", ""},
               {"config", "architecture config.json (default: beside the checkpoint)", ""},
               {"data", "ImageFolder root, CIFAR-10 binary folder, or an archive of either (see --subdir)", ""},
               {"subdir", "folder inside --data to evaluate (e.g. cifar10/test) or a CIFAR-10 binary split (test)", ""},
               {"synsets", "class list, line i = class i (ImageNet: the 1000 sorted synsets)", ""},
               {"batch", "batch size", "256"},
               {"device", "cpu, cuda or auto", "auto"},
               {"precision", "fp32, or bf16: GEMMs and attention in bfloat16 with float32 sums (GPU only)", "fp32"},
               {"limit", "evaluate only N images, spread evenly over the set (0 = all)", "0"},
               {"workers", "loader threads", "2"},
               {"skip-bad-images", "skip undecodable images (counted) instead of failing", "", true},
               {"predictions", "write '<relative path> <predicted index>' lines here", ""},
               {"out", "results JSON", ""},
               {"log", "JSONL log, one line per batch: images so far, running top-1/top-5, img/s", ""}});
  if (!flags.parse(argc, argv)) return 0;
  check(!flags.get("model").empty() && !flags.get("data").empty(), "--model and --data are required (see --help)");
  const Device device = Device::parse(flags.get("device"));
  const GemmPrecisionGuard precision(parse_gemm_precision(flags.get("precision"), device));
  EvalOptions options;
  options.batch_size = flags.get_int_at_least("batch", 1);
  options.limit = flags.get_int_at_least("limit", 0);
  options.num_workers = static_cast<int>(flags.get_int_at_least("workers", 0));
  options.skip_bad_images = flags.get_bool("skip-bad-images");
  options.device = device;
  VitLoadOptions load_options;
  load_options.config_path = flags.get("config");
  auto model = load_vit(flags.get("model"), load_options);

  const auto opened = data::open_dataset(flags.get("data"), flags.get("subdir"), flags.get("synsets"));
  const data::LabeledDataset& dataset = *opened;
  check_labels_fit(model->config, dataset);
  for (const char* output : {"predictions", "out", "log"}) {
    if (!flags.get(output).empty()) prepare_output_file(output, flags.get(output));
  }
  std::unique_ptr<MetricsLog> log;
  if (!flags.get("log").empty()) log = std::make_unique<MetricsLog>(flags.get("log"));
  options.log = log.get();
  model->to(device);
  fmt::print("model {} ({} parameters) on {}, {} images from {}\n", flags.get("model"), model->num_parameters(),
             device.str(), options.limit > 0 ? std::min<int64_t>(options.limit, dataset.size()) : dataset.size(),
             dataset.root());
  // An A-ViT (engine.halting in its config.json) runs with tokens really dropped.
  std::unique_ptr<RetentionMeter> meter;
  if (model->config.halting) meter = std::make_unique<RetentionMeter>(*model);
  EvalResult result = evaluate_classifier(meter ? meter->logits() : inference_logits(*model), dataset,
                                          model->config.preprocess, options);
  fmt::print("top-1 {:.2f}%  top-5 {:.2f}%  {} images  {:.1f} img/s{}\n", 100 * result.top1, 100 * result.top5,
             result.images, result.images_per_second,
             result.bad_images ? fmt::format("  ({} undecodable images skipped)", result.bad_images) : "");
  if (meter) fmt::print("A-ViT: {:.1f}% of the tokens enter a layer on average\n", 100 * meter->mean_retention());
  if (!flags.get("predictions").empty()) {
    std::string lines;
    for (const auto& [name, predicted] : result.predictions) lines += fmt::format("{} {}\n", name, predicted);
    write_file_atomic(flags.get("predictions"), lines);
  }
  if (!flags.get("out").empty()) {
    nlohmann::json out = {{"model", flags.get("model")},
                          {"data", dataset.root()},
                          {"images", result.images},
                          {"top1", result.top1},
                          {"top5", result.top5},
                          {"images_per_second", result.images_per_second},
                          {"seconds", result.seconds},
                          {"bad_images", result.bad_images},
                          {"batch_size", options.batch_size},
                          {"device", device.str()},
                          {"precision", flags.get("precision")}};
    if (meter) {
      out["retention"] = meter->retention();
      out["mean_retention"] = meter->mean_retention();
    }
    write_json_atomic(flags.get("out"), out);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_tool("eval_imagenet", eval_main, argc, argv); }

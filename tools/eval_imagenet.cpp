// ./eval_imagenet --model PATH [--config FILE] --data DIR [--subdir DIR] [--synsets FILE] [--batch N]
//                 [--device auto|cpu|cuda] [--precision fp32|bf16] [--limit N] [--workers N] [--skip-bad-images]
//                 [--predictions FILE] [--out results.json] [--log metrics.jsonl]
//                 [--latency 1,256 [--latency-repeats N]]
// Top-1/top-5 of a checkpoint on an ImageFolder (ImageNet val/<synset>/*.JPEG with a
// synset list, or any other folder such as the CIFAR-10 test JPEGs) or on CIFAR-10's
// official binary batches (--data cifar-10-binary.tar.gz --subdir test). An A-ViT checkpoint
// is evaluated with halting, tokens really dropped, and its token retention reported.
// --latency times the forward at the given batch sizes (the median over repeated
// calls, each waited for; on a GPU also replayed as one CUDA graph).
#include <optional>

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
               {"log", "JSONL log, one line per batch: images so far, running top-1/top-5, img/s", ""},
               {"latency", "batch sizes to time the forward at, e.g. 1,256 (none: no timing)", ""},
               {"latency-repeats", "timed calls per batch size (their median is reported)", "20"}});
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
  const std::vector<int64_t> latency_batches = flags.get_int_list("latency");
  for (int64_t batch : latency_batches) check(batch >= 1, "--latency {}: batch sizes must be at least 1", batch);
  const int64_t latency_repeats = flags.get_int_at_least("latency-repeats", 1);
  VitLoadOptions load_options;
  load_options.config_path = flags.get("config");
  auto model = load_vit(flags.get("model"), load_options);

  const auto opened = data::open_dataset(flags.get("data"), flags.get("subdir"), flags.get("synsets"));
  const data::LabeledDataset& dataset = *opened;
  check_labels_fit(model->config, dataset);
  for (const char* output : {"predictions", "out", "log"}) {
    if (!flags.get(output).empty()) prepare_output_file(fmt::format("flag --{}", output), flags.get(output));
  }
  std::unique_ptr<MetricsLog> log;
  if (!flags.get("log").empty()) log = std::make_unique<MetricsLog>(flags.get("log"));
  options.log = log.get();
  model->to(device);
  fmt::print("model {} ({} parameters) on {}, {} images from {}\n", flags.get("model"), model->num_parameters(),
             device.str(), options.limit > 0 ? std::min<int64_t>(options.limit, dataset.size()) : dataset.size(),
             dataset.root());
  // An A-ViT (engine.halting in its config.json) runs with tokens really dropped.
  const ModelEvaluation evaluation = evaluate_model(*model, dataset, options);
  const EvalResult& result = evaluation.result;
  fmt::print("top-1 {:.2f}%  top-5 {:.2f}%  {} images  {:.1f} img/s{}\n", 100 * result.top1, 100 * result.top5,
             result.images, result.images_per_second,
             result.bad_images ? fmt::format("  ({} undecodable images skipped)", result.bad_images) : "");
  fmt::print("{:.4f} GFLOPs per image in GEMMs\n", result.gflops);
  if (model->config.halting) {
    fmt::print("A-ViT: {:.1f}% of the tokens enter a layer on average\n", 100 * evaluation.mean_retention);
  }
  std::optional<LatencyTable> latency;
  if (!latency_batches.empty()) {
    latency = time_models({model.get()}, dataset, latency_batches, latency_repeats, device);
    for (size_t b = 0; b < latency_batches.size(); ++b) {
      const std::string graph =
          latency->graph_ms.empty() ? "" : fmt::format(" ({:.3f} ms replayed as a graph)", latency->graph_ms[0][b]);
      fmt::print("latency at batch {}: {:.3f} ms{}\n", latency_batches[b], latency->eager_ms[0][b], graph);
    }
  }
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
                          {"params", model->num_parameters()},
                          {"gflops", result.gflops},
                          {"seconds", result.seconds},
                          {"bad_images", result.bad_images},
                          {"batch_size", options.batch_size},
                          {"device", device.str()},
                          {"precision", flags.get("precision")}};
    if (model->config.halting) {
      out["retention"] = evaluation.retention;
      out["mean_retention"] = evaluation.mean_retention;
    }
    if (latency) {
      out["latency_ms"] = latency->by_batch(latency->eager_ms[0]);
      if (!latency->graph_ms.empty()) out["graph_latency_ms"] = latency->by_batch(latency->graph_ms[0]);
      out["latency_repeats"] = latency_repeats;
    }
    write_json_atomic(flags.get("out"), out);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_tool("eval_imagenet", eval_main, argc, argv); }

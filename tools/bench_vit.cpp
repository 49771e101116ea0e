// ./bench_vit [--device cuda] [--models vit_small_patch16_224,vit_base_patch16_224]
//             [--batch 256] [--steps 10] [--precision fp32|bf16] [--out bench_vit.json]
//             [--mixer gated_rnn:width=96 --replace 2,3,4,5] [--img-size 384]
// Images per second of whole ViTs on random images of the preset's size: inference
// (forward under no-grad) and a training step (forward, cross-entropy,
// backward, AdamW), the median over timed rounds after warm-up, each round
// timed on the device (CUDA events on a GPU); on a GPU also the inference
// forward replayed as one DeviceGraph, the GPU's time without the host's cost
// of issuing each op (null on the CPU, which has no graphs).
// bench/torch_vit_bench.py times PyTorch + timm on the same shapes for the
// ratios in bench/RESULTS.md.
// --mixer and --replace time a hybrid (./train_distill's student) instead:
// the listed blocks' attention replaced by that mixer (speed does not depend
// on the weights, so no training is needed).
#include <algorithm>
#include <optional>

#include "engine/autograd.h"
#include "engine/bench_timing.h"
#include "engine/cli.h"
#include "engine/config.h"
#include "engine/ops/ops.h"
#include "engine/optim/optimizer.h"
#include "models/vit.h"
#include "train/metrics.h"

using namespace engine;

namespace {

struct VitTiming {
  std::string model;
  int64_t params = 0;
  int64_t img_size = 0;
  double infer_img_s = 0, train_img_s = 0;
  std::optional<double> graph_infer_img_s = std::nullopt;  // none on the CPU
};

// The blocks of `replace` get `mixer`; the others keep attention (none listed:
// the plain ViT, and no mixer).
struct Replacement {
  std::string mixer;
  std::vector<int64_t> blocks;
};

// --mixer and --replace: both or neither, each block listed once.
Replacement parse_replacement(const Flags& flags) {
  const Replacement replacement{flags.get("mixer"), flags.get_int_list("replace")};
  check(!replacement.blocks.empty() || replacement.mixer.empty(), "--mixer {} needs --replace (the blocks that get it)",
        replacement.mixer);
  check(replacement.blocks.empty() || !replacement.mixer.empty(), "--replace {} needs --mixer (what those blocks get)",
        flags.get("replace"));
  std::vector<int64_t> sorted = replacement.blocks;
  std::sort(sorted.begin(), sorted.end());
  const auto repeated = std::adjacent_find(sorted.begin(), sorted.end());
  if (repeated != sorted.end()) fail("--replace {}: block {} is listed twice", flags.get("replace"), *repeated);
  return replacement;
}

// The preset as timed: its image size (0: the preset's) and mixers; a block
// outside the model, an image size it cannot take, or a bad mixer spec is an
// error naming the flag.
VitConfig bench_config(const std::string& preset, const Replacement& replacement, int64_t img_size) {
  VitConfig config = vit_preset(preset);
  if (img_size > 0) config.img_size = img_size;  // more tokens: (img_size / patch)^2 + 1
  config.validate(fmt::format("--img-size {} for {}", img_size, preset));
  config.mixers.assign(config.depth, "attention");
  for (int64_t block : replacement.blocks) {
    check(block >= 0 && block < config.depth, "--replace: block {} is not in {}'s 0..{}", block, preset,
          config.depth - 1);
    config.mixers[block] = replacement.mixer;
  }
  if (!replacement.blocks.empty()) config.validate(fmt::format("--mixer {} in {}", replacement.mixer, preset));
  return config;
}

VitTiming time_model(const std::string& preset, const VitConfig& config, Device device, int64_t batch, int steps) {
  VisionTransformer model(config, /*seed=*/0);
  model.to(device);
  Rng rng(1);
  const Tensor images = Tensor::uniform({batch, 3, config.img_size, config.img_size}, rng, -2, 2).to(device);
  Tensor labels = Tensor::empty({batch}, DType::I64, Device::cpu());
  for (int64_t i = 0; i < batch; ++i) labels.data<int64_t>()[i] = i % config.num_classes;
  labels = labels.to(device);

  VitTiming timing{preset, model.num_parameters(), config.img_size};
  // Progress on stderr: each phase is 2 warm-up calls and 3 rounds of `steps` (minutes on a CPU).
  auto phase = [&](const char* name) { fmt::print(stderr, "{}: timing {} ({} calls)\n", preset, name, 3 * steps + 2); };
  phase("inference");
  const double infer_ms = median_time_ms(device, [&] {
    NoGradGuard no_grad;
    model.forward(images);
  }, steps, /*rounds=*/3, /*warmup=*/2);
  timing.infer_img_s = batch / (infer_ms / 1e3);
  if (device.is_cuda()) {  // the same forward replayed as one graph: without the host's cost per op
    phase("graph replays");
    NoGradGuard no_grad;
    DeviceGraph forward(device, [&] { model.forward(images); });
    timing.graph_infer_img_s = batch / (median_time_ms(device, [&] { forward.replay(); }, steps, 3, 2) / 1e3);
  }

  std::vector<Tensor> params;
  model.visit([&](const std::string&, Tensor& p) {
    p.set_requires_grad(true);
    params.push_back(p);
  });
  auto optimizer = make_adamw(decay_groups(params, 0.05), {1e-4});
  phase("training steps");
  const double train_ms = median_time_ms(device, [&] {
    optimizer->zero_grad();
    cross_entropy(model.forward(images), labels).backward();
    optimizer->step();
  }, steps, /*rounds=*/3, /*warmup=*/2);
  timing.train_img_s = batch / (train_ms / 1e3);
  return timing;
}

int bench_main(int argc, char** argv) {
  Flags flags("bench_vit [flags]", {{"device", "cpu, cuda or auto", "auto"},
                                    {"models", "comma-separated presets", "vit_small_patch16_224,vit_base_patch16_224"},
                                    {"batch", "images per step", "256"},
                                    {"steps", "calls per timed round (3 rounds, after 2 warm-up calls)", "10"},
                                    {"precision",
                                     "fp32, or bf16 on a GPU (GEMM operands in bfloat16, float32 accumulation)",
                                     "fp32"},
                                    {"mixer", "the mixer spec of the --replace blocks (needs --replace)", ""},
                                    {"replace", "comma-separated blocks given --mixer (none: the plain ViT)", ""},
                                    {"img-size", "input size in pixels (0: the preset's)", "0"},
                                    {"out", "results JSON", "bench_vit.json"}});
  if (!flags.parse(argc, argv)) return 0;
  const Device device = Device::parse(flags.get("device"));
  const int64_t batch = flags.get_int_at_least("batch", 1);
  const int steps = static_cast<int>(flags.get_int_at_least("steps", 1));
  const GemmPrecisionGuard precision(parse_gemm_precision(flags.get("precision"), device));
  const Replacement replacement = parse_replacement(flags);
  const int64_t img_size = flags.get_int_at_least("img-size", 0);
  std::vector<std::pair<std::string, VitConfig>> models;  // all built before any timing: a bad name fails first
  for (const std::string& preset : split_list(flags.get("models"))) {
    models.emplace_back(preset, bench_config(preset, replacement, img_size));
  }
  check(!models.empty(), "--models '{}' names no model", flags.get("models"));
  prepare_output_file("flag --out", flags.get("out"));

  nlohmann::json report = {{"device", device.str()}, {"batch", batch}, {"precision", flags.get("precision")},
                           {"mixer", replacement.blocks.empty() ? "attention" : replacement.mixer},
                           {"replace", replacement.blocks},
                           {"models", nlohmann::json::array()}};
  fmt::print("{:<26} {:>12} {:>14} {:>14} {:>14}\n", "model", "params", "infer img/s", "graph img/s", "train img/s");
  for (const auto& [preset, config] : models) {
    const VitTiming t = time_model(preset, config, device, batch, steps);
    fmt::print("{:<26} {:>12} {:>14.0f} {:>14} {:>14.0f}\n", t.model, t.params, t.infer_img_s,
               t.graph_infer_img_s ? fmt::format("{:.0f}", *t.graph_infer_img_s) : "-", t.train_img_s);
    const nlohmann::json graph_img_s = t.graph_infer_img_s ? nlohmann::json(*t.graph_infer_img_s) : nullptr;
    report["models"].push_back({{"model", t.model},
                                {"params", t.params},
                                {"img_size", t.img_size},
                                {"infer_img_s", t.infer_img_s},
                                {"graph_infer_img_s", graph_img_s},
                                {"train_img_s", t.train_img_s}});
  }
  write_json_atomic(flags.get("out"), report);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_tool("bench_vit", bench_main, argc, argv); }

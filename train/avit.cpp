#include "train/avit.h"

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <utility>

#include "data/open_dataset.h"
#include "data/subset.h"
#include "engine/ops/ops.h"
#include "engine/optim/optimizer.h"
#include "models/avit.h"
#include "models/vit_checkpoint.h"
#include "train/batch_stream.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/metrics.h"
#include "train/progress.h"
#include "train/sparsity_pictures.h"

namespace engine {

namespace fs = std::filesystem;
using nlohmann::json;

AvitSettings AvitSettings::from_config(const Config& c) {
  AvitSettings s;
  s.teacher = c.get_string("teacher", "model");
  s.teacher_config = c.get_string("teacher", "config", "");
  s.read_data_settings(c);
  s.halting.gamma = c.get_double_above("halting", "gamma", s.halting.gamma, 0.0);
  s.halting.beta = c.get_double("halting", "beta", s.halting.beta);  // finite: the parser rejects nan and inf
  s.halting.eps = c.get_double("halting", "eps", s.halting.eps);
  s.halting.validate(c.where("halting", "eps") + " [halting]");  // eps in (0, 1), all that is left to check
  s.alpha_p = c.get_double_in("halting", "alpha_p", s.alpha_p, 0.0, INFINITY);
  s.alpha_d = c.get_double_in("halting", "alpha_d", s.alpha_d, 0.0, INFINITY);
  s.target_depth = c.get_double_above("halting", "target_depth", s.target_depth, 0.0);  // <= depth: run_avit
  s.prior_std = c.get_double_above("halting", "prior_std", s.prior_std, 0.0);
  s.budget_images = s.read_budget(c, "train", s.budget_images);
  s.lr = c.get_double_above("train", "lr", s.lr, 0.0);
  s.weight_decay = c.get_double_in("train", "weight_decay", s.weight_decay, 0.0, INFINITY);
  s.warmup_fraction = c.get_double_in("train", "warmup_fraction", s.warmup_fraction, 0.0, 1.0);
  s.kl_weight = c.get_double_in("train", "kl_weight", s.kl_weight, 0.0, INFINITY);
  s.temperature = c.get_double_above("train", "temperature", s.temperature, 0.0);
  s.seed = static_cast<uint64_t>(c.get_int_at_least("train", "seed", 0, 0));
  s.latency_repeats = c.get_int_at_least("eval", "latency_repeats", s.latency_repeats, 1);
  s.latency_batches = read_latency_batches(c, s.latency_batches);
  s.depth_maps = c.get_int_at_least("output", "depth_maps", s.depth_maps, 0);
  s.out_dir = c.get_string("output", "dir", s.out_dir);
  s.overwrite = c.get_bool("output", "overwrite", false);
  return s;
}

namespace {

std::unique_ptr<VisionTransformer> load_teacher(const AvitSettings& s) {
  VitLoadOptions options;
  options.config_path = s.teacher_config;
  auto model = load_vit(s.teacher, options);
  model->to(s.device);
  return model;
}

struct LossParts {
  Tensor total, ce, distill, ponder, prior;
};

LossParts avit_losses(VisionTransformer& model, const Tensor& images, const Tensor& labels, const Tensor& teacher_logits,
                      const std::vector<double>& prior, const AvitSettings& s, Rng& rng, HaltingTrace* trace) {
  ForwardContext ctx;
  ctx.training = true;  // drop-path, when the checkpoint's config asks for it
  ctx.rng = &rng;
  LossParts parts;
  Tensor logits = avit_forward(model, images, ctx, trace);
  parts.ce = cross_entropy(logits, labels);
  parts.ponder = ponder_loss(*trace);
  parts.prior = prior_kl(halting_distribution(*trace), prior);
  parts.total = parts.ce + parts.ponder * s.alpha_p + parts.prior * s.alpha_d;
  if (teacher_logits.defined()) {
    parts.distill = kl_div_with_temperature(logits, teacher_logits, s.temperature);
    parts.total = parts.total + parts.distill * s.kl_weight;
  }
  return parts;
}

double mean_of(const std::vector<double>& values) {
  return std::accumulate(values.begin(), values.end(), 0.0) / std::max<size_t>(values.size(), 1);
}

void train(VisionTransformer& model, VisionTransformer& teacher, const data::Dataset& train_set,
           const AvitSettings& s, MetricsLog& log) {
  std::vector<Tensor> params;
  for (auto& [name, p] : model.named_parameters()) params.push_back(p.set_requires_grad(true));
  auto optimizer = make_adamw(decay_groups(params, s.weight_decay), {s.lr});
  const int64_t steps = s.budget_images / s.batch_size;
  const WarmupCosineSchedule schedule = warmup_cosine(s.lr, steps, s.warmup_fraction);
  const std::vector<double> prior = gaussian_depth_prior(model.config.depth, s.target_depth, s.prior_std);
  BatchStream stream(train_set, model.config.preprocess, s, s.seed);
  Rng rng(s.seed);
  ProgressBar bar("train A-ViT", steps * s.batch_size);
  for (int64_t step = 0; step < steps; ++step) {
    Tensor images, labels, teacher_logits;
    stream.next(&images, &labels);
    if (s.kl_weight > 0) {
      NoGradGuard no_grad;
      teacher_logits = teacher.forward(images);
    }
    HaltingTrace trace;
    LossParts loss = avit_losses(model, images, labels, teacher_logits, prior, s, rng, &trace);
    optimizer->zero_grad();
    loss.total.backward();
    optimizer->set_lr(schedule.lr_at(step));
    optimizer->step();
    if (!is_log_step(step, steps)) {
      bar.update(s.batch_size);
      continue;
    }
    const std::vector<double> retention = layer_retention(trace);
    json record = {{"phase", "train"},          {"step", step},
                   {"lr", optimizer->lr()},     {"loss", loss.total.item<double>()},
                   {"ce", loss.ce.item<double>()}, {"ponder", loss.ponder.item<double>()},
                   {"prior_kl", loss.prior.item<double>()}, {"retention", retention},
                   {"mean_retention", mean_of(retention)}};
    if (loss.distill.defined()) record["distill_kl"] = loss.distill.item<double>();
    log.write(record);
    bar.update(s.batch_size, fmt::format("loss {:.3f} ponder {:.2f} kept {:.1f}%", record["loss"].get<double>(),
                                         record["ponder"].get<double>(), 100 * mean_of(retention)));
  }
  bar.finish();
  for (Tensor& p : params) p.set_requires_grad(false);
}

// Top-1 with tokens really dropped, and the fraction of tokens entering each layer.
json evaluate_avit(VisionTransformer& model, const data::Dataset& test, const AvitSettings& s) {
  return evaluation_report(evaluate_model(model, test, s.eval_options()), model);
}

// The teacher's report, with its path: mean retention 1 for a dense ViT, less
// for one that is itself an A-ViT (its compacted path).
json evaluate_teacher(VisionTransformer& teacher, const data::Dataset& test, const AvitSettings& s) {
  json report = evaluation_report(evaluate_model(teacher, test, s.eval_options()), teacher);
  report["path"] = s.teacher;
  return report;
}

// The mean share of tokens entering a layer in each timed batch (the
// timing_images that time_models takes): {"b<N>": share}. An A-ViT's speed
// depends on it.
json timed_retention(VisionTransformer& model, const data::Dataset& test, const AvitSettings& s) {
  NoGradGuard no_grad;
  json shares = json::object();
  for (int64_t batch : s.latency_batches) {
    RetentionMeter meter(model);
    meter.logits()(timing_images(test, model.config.preprocess, batch, s.device));
    shares[fmt::format("b{}", batch)] = meter.mean_retention();
  }
  return shares;
}

// OUT/depth_map_img<k>.png: the image, then N_k (layers a patch passes through)
// per patch, yellow = all layers.
// Returns [{"file", "image"}, ...]: each map's file and the test image it shows.
json write_depth_maps(VisionTransformer& model, const data::Dataset& test, const AvitSettings& s) {
  json maps = json::array();
  if (s.depth_maps == 0) return maps;
  // Spread over the set, as the timed images: an ImageFolder lists its items
  // class by class, so the first few would all show one class.
  const data::Subset spread(test, data::evenly_spaced_items(test.size(), static_cast<size_t>(s.depth_maps)));
  const Tensor images = first_images(spread, model.config.preprocess, s.depth_maps, s.device);
  HaltingTrace trace;
  {
    NoGradGuard no_grad;
    avit_forward(model, images, {}, &trace);
  }
  const Tensor depths = halting_depths(trace).to(Device::cpu()).to(DType::F32).contiguous();
  const Tensor cpu_images = images.to(Device::cpu()).contiguous();
  const int64_t tokens = depths.size(1), prefix = model.config.num_prefix_tokens();
  for (int64_t b = 0; b < images.size(0); ++b) {
    const float* row = depths.data<float>() + b * tokens + prefix;
    const std::vector<float> map(row, row + (tokens - prefix));
    const std::string file = fmt::format("depth_map_img{}.png", b);
    data::write_png(image_with_maps(to_rgb_image(cpu_images, b, model.config.preprocess), {map},
                                    model.config.grid(), static_cast<double>(model.config.depth)),
                    (fs::path(s.out_dir) / file).string());
    maps.push_back({{"file", file}, {"image", spread.name(static_cast<size_t>(b))}});
  }
  return maps;
}

}  // namespace

json run_avit(const AvitSettings& s) {
  const GemmPrecisionGuard gemm_precision(parse_gemm_precision(s.precision, s.device));
  // Every input is checked before the output folder is touched.
  const auto train_opened = data::open_dataset(s.data, s.train_subdir);
  const auto test_opened = data::open_dataset(s.data, s.test_subdir);
  const data::LabeledDataset& train_set = *train_opened;
  const data::LabeledDataset& test_set = *test_opened;
  auto teacher = load_teacher(s);
  check_labels_fit(teacher->config, train_set);
  check_labels_fit(teacher->config, test_set);
  check(s.target_depth <= static_cast<double>(teacher->config.depth),
        "[halting] target_depth = {} is deeper than the teacher's {} blocks", s.target_depth, teacher->config.depth);
  auto model = load_teacher(s);
  model->config.halting = s.halting;
  model->config.validate();
  std::vector<std::string> outputs = atomic_directory_names("avit");
  outputs.insert(outputs.end(), {"results.json", "metrics.jsonl", "depth_map_img*"});
  // As in train_distill, no input may lie in an output that overwriting
  // removes: the teacher's folder (results.json names it), the data (read later).
  prepare_out_dir(s.out_dir, s.overwrite, outputs, {s.teacher, s.teacher_config, s.data});
  MetricsLog log((fs::path(s.out_dir) / "metrics.jsonl").string());

  fmt::print("evaluating the teacher\n");
  json teacher_report = evaluate_teacher(*teacher, test_set, s);
  train(*model, *teacher, train_set, s, log);
  fmt::print("evaluating the A-ViT (tokens dropped)\n");
  json avit = evaluate_avit(*model, test_set, s);

  // Median latencies at every configured batch, the two models taking turns.
  const LatencyTable latency = time_models({teacher.get(), model.get()}, test_set, s.latency_batches,
                                           s.latency_repeats, s.device);
  teacher_report["latency_ms"] = latency.by_batch(latency.eager_ms[0]);
  const json avit_latency = latency.by_batch(latency.eager_ms[1]);
  json speedup = json::object();
  for (const auto& [batch, ms] : teacher_report["latency_ms"].items()) {
    speedup[batch] = ms.get<double>() / avit_latency[batch].get<double>();
  }
  avit["latency_ms"] = avit_latency;
  avit["latency_mean_retention"] = timed_retention(*model, test_set, s);

  write_directory_atomically((fs::path(s.out_dir) / "avit").string(),
                             [&](const std::string& staging) { save_vit(*model, staging); });
  json results = {
      {"teacher", teacher_report},
      {"avit", avit},
      {"speedup", speedup},
      {"depth_maps", write_depth_maps(*model, test_set, s)},
      {"settings",
       {{"gamma", s.halting.gamma}, {"beta", s.halting.beta}, {"eps", s.halting.eps}, {"alpha_p", s.alpha_p},
        {"alpha_d", s.alpha_d}, {"target_depth", s.target_depth}, {"prior_std", s.prior_std},
        {"budget_images", s.budget_images}, {"lr", s.lr}, {"kl_weight", s.kl_weight}, {"seed", s.seed},
        {"device", s.device.str()}, {"precision", s.precision}}},
      {"checkpoint", (fs::path(s.out_dir) / "avit").string()}};
  write_json_atomic((fs::path(s.out_dir) / "results.json").string(), results);
  return results;
}

}  // namespace engine

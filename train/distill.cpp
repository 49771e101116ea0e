#include "train/distill.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>

#include "data/archive.h"
#include "data/image_folder.h"
#include "engine/ops/ops.h"
#include "engine/optim/optimizer.h"
#include "models/vit_checkpoint.h"
#include "train/evaluate.h"
#include "train/layer_groups.h"
#include "train/metrics.h"
#include "train/progress.h"
#include "train/sparsity_report.h"

namespace engine {

namespace fs = std::filesystem;
using nlohmann::json;

DistillSettings DistillSettings::from_config(const Config& c) {
  DistillSettings s;
  s.teacher = c.get_string("teacher", "model");
  s.teacher_config = c.get_string("teacher", "config", "");
  s.data = c.get_string("data", "path");
  s.train_subdir = c.get_string("data", "train_subdir", "");
  s.test_subdir = c.get_string("data", "test_subdir", "");
  s.test_limit = c.get_int("data", "test_limit", 0);
  s.batch_size = c.get_int("data", "batch_size", s.batch_size);
  s.workers = static_cast<int>(c.get_int("data", "workers", s.workers));
  s.device = Device::parse(c.get_string("run", "device", "auto"));
  s.layers = c.get_string("layers", "select", s.layers);
  s.sparsity_images = c.get_int("layers", "sparsity_images", s.sparsity_images);
  s.mixer = c.get_string("student", "mixer", s.mixer);
  parse_mixer_spec(s.mixer);  // fails early, naming the kinds and keys it knows
  s.budget_images = c.get_int("distill", "budget_images", s.budget_images);
  s.lr = c.get_double("distill", "lr", s.lr);
  s.weight_decay = c.get_double("distill", "weight_decay", s.weight_decay);
  s.cosine_weight = c.get_double("distill", "cosine_weight", s.cosine_weight);
  s.warmup_fraction = c.get_double("distill", "warmup_fraction", s.warmup_fraction);
  s.seed = static_cast<uint64_t>(c.get_int("distill", "seed", 0));
  s.finetune_images = c.get_int("finetune", "budget_images", s.finetune_images);
  s.finetune_lr = c.get_double("finetune", "lr", s.finetune_lr);
  s.temperature = c.get_double("finetune", "temperature", s.temperature);
  s.kl_weight = c.get_double("finetune", "kl_weight", s.kl_weight);
  s.finetune_params = c.get_choice("finetune", "params", s.finetune_params, {"students", "all"});
  s.latency_repeats = c.get_int("eval", "latency_repeats", s.latency_repeats);
  s.latency_batches = c.get_int_list("eval", "latency_batches", s.latency_batches);
  s.experiment = c.get_choice("experiment", "kind", s.experiment, {"single", "groupwise"});
  s.groups = c.get_string("experiment", "groups", s.groups);
  s.out_dir = c.get_string("output", "dir", s.out_dir);
  s.overwrite = c.get_bool("output", "overwrite", false);
  check(s.budget_images > 0 && s.batch_size > 0 && s.latency_repeats > 0,
        "{}: budget_images, batch_size and latency_repeats must be positive", c.source());
  return s;
}

Tensor distill_loss(const Tensor& prediction, const Tensor& target, double cosine_weight) {
  Tensor variance;
  {
    NoGradGuard no_grad;  // a constant scale: the target carries no gradient
    variance = mean(pow(target - mean(target), 2.0));
  }
  Tensor loss = mse_loss(prediction, target) / add(variance, 1e-12);
  if (cosine_weight == 0.0) return loss;
  Tensor dot = sum(prediction * target, {-1});
  Tensor norms = sqrt(sum(prediction * prediction, {-1}) * sum(target * target, {-1}));
  Tensor cosine = mean(dot / add(norms, 1e-8));
  return loss + (1.0 - cosine) * cosine_weight;
}

namespace {

// ------------------------------------------------------------------ data

struct Datasets {
  std::unique_ptr<data::ImageFolder> train, test;
};

Datasets open_datasets(const DistillSettings& s) {
  return {std::make_unique<data::ImageFolder>(data::resolve_data_dir(s.data, s.train_subdir)),
          std::make_unique<data::ImageFolder>(data::resolve_data_dir(s.data, s.test_subdir))};
}

// An endless, shuffled, deterministic stream of training batches on a device.
class BatchStream {
 public:
  BatchStream(const data::Dataset& dataset, const Preprocess& preprocess, const DistillSettings& s, uint64_t seed)
      : loader_(dataset, eval_transform(preprocess, /*random_flip=*/true), options(preprocess, s, seed)),
        device_(s.device) {
    loader_.start_epoch(epoch_);
  }

  void next(Tensor* images, Tensor* labels) {
    data::Batch batch;
    while (!loader_.next(batch)) loader_.start_epoch(++epoch_);
    *images = Tensor::from_vector(batch.images, {batch.n, batch.c, batch.h, batch.w}).to(device_);
    *labels = Tensor::from_vector(batch.labels, {batch.n}).to(device_);
  }

 private:
  static data::LoaderOptions options(const Preprocess& p, const DistillSettings& s, uint64_t seed) {
    data::LoaderOptions o;
    o.batch_size = static_cast<size_t>(s.batch_size);
    o.shuffle = true;
    o.drop_last = true;
    o.num_workers = s.workers;
    o.seed = seed;
    o.height = o.width = static_cast<int>(p.input_size);
    return o;
  }

  data::DataLoader loader_;
  Device device_;
  int64_t epoch_ = 0;
};

// ------------------------------------------------------------------ sparsity

struct LayerSparsity {
  std::vector<double> k90, entropy;
  std::vector<int64_t> ranking;  // sparsest (smallest k90) first
};

LayerSparsity measure_sparsity(VisionTransformer& teacher, const data::Dataset& train, const DistillSettings& s) {
  SparsityAnalysis analysis(teacher, /*heatmap_images=*/0);
  SparsityRunOptions options;
  options.num_images = s.sparsity_images;
  options.batch_size = s.batch_size;
  options.num_workers = s.workers;
  analyze_dataset(analysis, train, options);
  LayerSparsity result;
  for (int64_t i = 0; i < teacher.config.depth; ++i) {
    result.k90.push_back(analysis.stats().layer(i).k90);
    result.entropy.push_back(analysis.stats().layer(i).entropy);
  }
  result.ranking = analysis.ranking();
  return result;
}

// ------------------------------------------------------------------ students

using Students = std::vector<std::unique_ptr<TokenMixer>>;

std::vector<Tensor> student_parameters(Students& students, const std::vector<int64_t>& layers) {
  std::vector<Tensor> params;
  for (size_t k = 0; k < students.size(); ++k) {
    students[k]->visit(fmt::format("blocks.{}.attn", layers[k]), [&](const std::string& name, Tensor& p) {
      p.set_name(name);
      params.push_back(p);
    });
  }
  return params;
}

WarmupCosineSchedule schedule_for(double lr, int64_t steps, double warmup_fraction) {
  WarmupCosineSchedule schedule;
  schedule.base_lr = lr;
  schedule.total_steps = std::max<int64_t>(steps, 1) + 1;
  schedule.warmup_steps = static_cast<int64_t>(warmup_fraction * steps);
  return schedule;
}

// Step 3: every chosen layer's student learns the teacher's attention branch.
Students distill_layers(VisionTransformer& teacher, const std::vector<int64_t>& layers, const data::Dataset& train,
                        const DistillSettings& s, MetricsLog& log) {
  Rng rng(s.seed);
  Students students;
  for (size_t k = 0; k < layers.size(); ++k) {
    students.push_back(make_mixer(parse_mixer_spec(s.mixer), teacher.config.embed_dim, rng));
    move_parameters([&](const ParamVisitor& fn) { students.back()->visit("", fn); }, s.device);
  }
  std::vector<Tensor> params = student_parameters(students, layers);
  for (Tensor& p : params) p.set_requires_grad(true);
  auto optimizer = make_adamw(decay_groups(params, s.weight_decay), {s.lr});
  const int64_t steps = s.budget_images / s.batch_size;
  const WarmupCosineSchedule schedule = schedule_for(s.lr, steps, s.warmup_fraction);

  BatchStream stream(train, teacher.config.preprocess, s, s.seed);
  ProgressBar bar(fmt::format("distill {} layer(s)", layers.size()), steps * s.batch_size);
  for (int64_t step = 0; step < steps; ++step) {
    Tensor images, labels;
    stream.next(&images, &labels);
    ForwardTrace trace;
    trace.last_block = layers.back();
    {
      NoGradGuard no_grad;  // the teacher is frozen: one forward feeds every student
      teacher.forward_tokens(images, {}, &trace);
    }
    Tensor total;
    json layer_losses = json::object();
    for (size_t k = 0; k < layers.size(); ++k) {
      const BlockTrace& block = trace.blocks[layers[k]];
      Tensor loss = distill_loss(students[k]->forward(block.mixer_input, {}, nullptr), block.mixer_output,
                                 s.cosine_weight);
      layer_losses[std::to_string(layers[k])] = loss.item<double>();
      total = total.defined() ? total + loss : loss;
    }
    optimizer->zero_grad();
    total.backward();
    optimizer->set_lr(schedule.lr_at(step));
    optimizer->step();
    const double mean_loss = total.item<double>() / layers.size();
    bar.update(s.batch_size, fmt::format("loss {:.4f}", mean_loss));
    if (step % 10 == 0 || step + 1 == steps) {
      log.write({{"phase", "distill"}, {"step", step}, {"lr", optimizer->lr()}, {"loss", mean_loss},
                 {"layer_loss", layer_losses}});
    }
  }
  bar.finish();
  for (Tensor& p : params) p.set_requires_grad(false);
  return students;
}

// Step 4: a fresh copy of the teacher with the students in place of attention.
std::unique_ptr<VisionTransformer> splice(const DistillSettings& s, const std::vector<int64_t>& layers,
                                          Students students) {
  VitLoadOptions options;
  options.config_path = s.teacher_config;
  auto hybrid = load_vit(s.teacher, options);
  hybrid->to(s.device);
  for (size_t k = 0; k < layers.size(); ++k) {
    hybrid->blocks[layers[k]].mixer = std::move(students[k]);
    hybrid->config.mixers[layers[k]] = s.mixer;
  }
  return hybrid;
}

// Step 5: CE + temperature-scaled KL to the teacher's logits.
void finetune(VisionTransformer& hybrid, VisionTransformer& teacher, const std::vector<int64_t>& layers,
              const data::Dataset& train, const DistillSettings& s, MetricsLog& log) {
  std::vector<Tensor> params;
  for (auto& [name, p] : hybrid.named_parameters()) {
    const bool in_student = std::any_of(layers.begin(), layers.end(), [&](int64_t i) {
      return name.rfind(fmt::format("blocks.{}.attn.", i), 0) == 0;
    });
    if (s.finetune_params == "all" || in_student) params.push_back(p.set_requires_grad(true));
  }
  auto optimizer = make_adamw(decay_groups(params, s.weight_decay), {s.finetune_lr});
  const int64_t steps = s.finetune_images / s.batch_size;
  const WarmupCosineSchedule schedule = schedule_for(s.finetune_lr, steps, s.warmup_fraction);
  BatchStream stream(train, teacher.config.preprocess, s, s.seed + 1);
  ProgressBar bar("fine-tune", steps * s.batch_size);
  for (int64_t step = 0; step < steps; ++step) {
    Tensor images, labels, teacher_logits;
    stream.next(&images, &labels);
    {
      NoGradGuard no_grad;
      teacher_logits = teacher.forward(images);
    }
    Tensor logits = hybrid.forward(images);
    Tensor loss = cross_entropy(logits, labels) + kl_div_with_temperature(logits, teacher_logits, s.temperature) * s.kl_weight;
    optimizer->zero_grad();
    loss.backward();
    optimizer->set_lr(schedule.lr_at(step));
    optimizer->step();
    bar.update(s.batch_size, fmt::format("loss {:.4f}", loss.item<double>()));
    if (step % 10 == 0 || step + 1 == steps) {
      log.write({{"phase", "finetune"}, {"step", step}, {"lr", optimizer->lr()}, {"loss", loss.item<double>()}});
    }
  }
  bar.finish();
  for (Tensor& p : params) p.set_requires_grad(false);
}

// ------------------------------------------------------------------ evaluation

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Median wall time (ms) of a forward pass at `batch` after one warm-up run.
double latency_ms(VisionTransformer& model, int64_t batch, int64_t repeats, Device device) {
  Rng rng(1);
  const int64_t size = model.config.img_size;
  Tensor images = Tensor::randn({batch, model.config.in_chans, size, size}, rng).to(device);
  NoGradGuard no_grad;
  std::vector<double> times;
  for (int64_t r = 0; r <= repeats; ++r) {
    device_synchronize(device);
    const auto start = std::chrono::steady_clock::now();
    model.forward(images);
    device_synchronize(device);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (r > 0) times.push_back(ms);  // run 0 warms caches and allocators
  }
  return median(times);
}

json model_report(VisionTransformer& model, const data::Dataset& test, const DistillSettings& s, const char* label) {
  fmt::print("evaluating the {}\n", label);
  EvalOptions options;
  options.batch_size = std::min<int64_t>(s.batch_size * 4, 256);
  options.limit = s.test_limit;
  options.num_workers = s.workers;
  options.device = s.device;
  EvalResult eval = evaluate_classifier([&](const Tensor& x) { return model.forward(x); }, test,
                                        model.config.preprocess, options);
  const int64_t flops_before = gemm_flops_so_far();
  latency_ms(model, 1, 1, s.device);  // two batch-1 forwards: warm-up + one timed
  const int64_t flops = (gemm_flops_so_far() - flops_before) / 2;
  json report = {{"top1", eval.top1}, {"top5", eval.top5}, {"params", model.num_parameters()},
                 {"gflops", flops / 1e9}, {"eval_images", eval.images}};
  for (int64_t batch : s.latency_batches) {
    report[fmt::format("latency_ms_b{}", batch)] = latency_ms(model, batch, s.latency_repeats, s.device);
  }
  return report;
}

// ------------------------------------------------------------------ outputs

double mean_over(const std::vector<double>& values, const std::vector<int64_t>& layers) {
  double total = 0;
  for (int64_t i : layers) total += values[i];
  return total / layers.size();
}

// A scatter plot of accuracy drop against mean k90, one point per group.
std::string drop_vs_k90_svg(const json& groups) {
  const double width = 480, height = 320, margin = 50;
  double kmin = 1e9, kmax = -1e9, dmin = 1e9, dmax = -1e9;
  for (const json& g : groups) {
    kmin = std::min(kmin, g["k90"].get<double>());
    kmax = std::max(kmax, g["k90"].get<double>());
    dmin = std::min(dmin, g["drop"].get<double>());
    dmax = std::max(dmax, g["drop"].get<double>());
  }
  if (kmax - kmin < 1e-9) kmax = kmin + 1;
  if (dmax - dmin < 1e-9) dmax = dmin + 1;
  auto x = [&](double k) { return margin + (k - kmin) / (kmax - kmin) * (width - 2 * margin); };
  auto y = [&](double d) { return height - margin - (d - dmin) / (dmax - dmin) * (height - 2 * margin); };
  std::string svg = fmt::format(
      "<svg xmlns='http://www.w3.org/2000/svg' width='{0}' height='{1}' font-family='sans-serif' font-size='12'>\n"
      "<rect width='100%' height='100%' fill='white'/>\n"
      "<line x1='{2}' y1='{3}' x2='{4}' y2='{3}' stroke='black'/><line x1='{2}' y1='{2}' x2='{2}' y2='{3}' stroke='black'/>\n"
      "<text x='{5}' y='{6}' text-anchor='middle'>mean k90 of the replaced layers (tokens)</text>\n"
      "<text x='14' y='{7}' transform='rotate(-90 14 {7})' text-anchor='middle'>top-1 drop (points)</text>\n"
      "<text x='{2}' y='{8}'>{9:.1f}</text><text x='{4}' y='{8}' text-anchor='end'>{10:.1f}</text>\n"
      "<text x='{11}' y='{3}' text-anchor='end'>{12:.2f}</text><text x='{11}' y='{13}' text-anchor='end'>{14:.2f}</text>\n",
      width, height, margin, height - margin, width - margin, width / 2, height - 12, height / 2, height - margin + 16,
      kmin, kmax, margin - 4, dmin, margin + 4, dmax);
  for (const json& g : groups) {
    const double px = x(g["k90"].get<double>()), py = y(g["drop"].get<double>());
    svg += fmt::format("<circle cx='{:.1f}' cy='{:.1f}' r='4' fill='steelblue'/><text x='{:.1f}' y='{:.1f}'>{}</text>\n",
                       px, py, px + 6, py - 6, g["name"].get<std::string>());
  }
  return svg + "</svg>\n";
}

void prepare_out_dir(const DistillSettings& s) {
  if (fs::exists(fs::path(s.out_dir) / "results.json")) {
    check(s.overwrite, "output folder '{}' already holds results.json (set [output] overwrite = true)", s.out_dir);
  }
  fs::create_directories(s.out_dir);
}

}  // namespace

json run_distill(const DistillSettings& s) {
  prepare_out_dir(s);
  MetricsLog log((fs::path(s.out_dir) / "metrics.jsonl").string());
  Datasets datasets = open_datasets(s);
  VitLoadOptions options;
  options.config_path = s.teacher_config;
  auto teacher = load_vit(s.teacher, options);
  teacher->to(s.device);
  const int64_t depth = teacher->config.depth;

  const bool ranking_needed = needs_ranking(s.layers) || s.experiment == "groupwise";
  LayerSparsity sparsity;
  if (ranking_needed) sparsity = measure_sparsity(*teacher, *datasets.train, s);
  json results = {{"mixer", s.mixer}, {"budget_images", s.budget_images},
                  {"finetune_images", s.finetune_images}, {"device", s.device.str()}};
  if (ranking_needed) {
    results["sparsity"] = {{"k90", sparsity.k90}, {"entropy", sparsity.entropy}, {"ranking", sparsity.ranking},
                           {"images", s.sparsity_images}};
  }
  json teacher_report = model_report(*teacher, *datasets.test, s, "teacher");
  results["teacher"] = teacher_report;

  std::vector<std::vector<int64_t>> groups = s.experiment == "groupwise"
                                                 ? parse_groups(s.groups, depth, sparsity.ranking)
                                                 : std::vector<std::vector<int64_t>>{
                                                       select_layers(s.layers, depth, sparsity.ranking)};
  json group_results = json::array();
  std::vector<double> group_k90, group_drop;
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::vector<int64_t>& layers = groups[g];
    const std::string name = fmt::format("{}", fmt::join(layers, ","));
    fmt::print("group {}/{}: replacing layer(s) {} with {}\n", g + 1, groups.size(), name, s.mixer);
    auto hybrid = splice(s, layers, distill_layers(*teacher, layers, *datasets.train, s, log));
    if (s.finetune_images > 0) finetune(*hybrid, *teacher, layers, *datasets.train, s, log);
    json report = model_report(*hybrid, *datasets.test, s, "hybrid");
    json group = {{"name", name}, {"layers", layers}, {"top1", report["top1"]},
                  {"drop", 100.0 * (teacher_report["top1"].get<double>() - report["top1"].get<double>())}};
    if (ranking_needed) {
      group["k90"] = mean_over(sparsity.k90, layers);
      group["entropy"] = mean_over(sparsity.entropy, layers);
      group_k90.push_back(group["k90"]);
      group_drop.push_back(group["drop"]);
    }
    log.write({{"phase", "group"}, {"group", group}});
    group_results.push_back(group);
    if (s.experiment == "single") {
      results["student"] = report;
      results["replaced_layers"] = layers;
      save_vit(*hybrid, (fs::path(s.out_dir) / "hybrid").string());
    }
  }
  results["groups"] = group_results;
  results["spearman_rho"] = nullptr;
  if (s.experiment == "groupwise" && group_k90.size() >= 2) {
    const double rho = spearman_rho(group_k90, group_drop);
    if (!std::isnan(rho)) results["spearman_rho"] = rho;
    write_file_atomic((fs::path(s.out_dir) / "drop_vs_k90.svg").string(), drop_vs_k90_svg(group_results));
  }
  write_json_atomic((fs::path(s.out_dir) / "results.json").string(), results);
  return results;
}

}  // namespace engine

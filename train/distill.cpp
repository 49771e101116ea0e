#include "train/distill.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <sstream>

#include "data/open_dataset.h"
#include "data/random.h"
#include "engine/ops/ops.h"
#include "engine/optim/optimizer.h"
#include "models/avit.h"
#include "models/vit_checkpoint.h"
#include "train/batch_stream.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/layer_groups.h"
#include "train/metrics.h"
#include "train/progress.h"
#include "train/sparsity_pictures.h"
#include "train/sparsity_report.h"

namespace engine {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The key of the fine-tune's batch stream: mix_seed(seed, key), so that no
// seed's fine-tune draws the batches of another seed's distillation.
constexpr uint64_t kFinetuneStream = 0xf1e7a4eULL;

struct NamedTeacher {
  std::string name, path;
};

// "dense:<path>;avit_a:<path>;..." -> (name, path) pairs.
std::vector<NamedTeacher> parse_teachers(const std::string& spec) {
  std::vector<NamedTeacher> teachers;
  std::stringstream stream(spec);
  for (std::string entry; std::getline(stream, entry, ';');) {
    entry.erase(0, entry.find_first_not_of(" \t"));
    entry.erase(entry.find_last_not_of(" \t") + 1);
    if (entry.empty()) continue;
    const size_t colon = entry.find(':');
    check(colon != std::string::npos && colon > 0 && colon + 1 < entry.size(),
          "[experiment] teachers: '{}' is not name:path", entry);
    teachers.push_back({entry.substr(0, colon), entry.substr(colon + 1)});
  }
  check(teachers.size() >= 2, "[experiment] teachers: a sweep needs at least 2 teachers (name:path;...), got '{}'",
        spec);
  return teachers;
}

// [distill] seed = N, or seeds = N, M, ... (several only for the experiments
// that repeat their runs).
void read_seeds(const Config& c, DistillSettings* s) {
  const std::vector<int64_t> seeds = c.get_int_list("distill", "seeds", {});
  const bool experiment_repeats = s->experiment != "single";
  if (seeds.empty()) {
    const int64_t seed = c.get_int("distill", "seed", 0);
    check(seed >= 0, "{}: [distill] seed = {} is negative", c.where("distill", "seed"), seed);
    s->seeds = {static_cast<uint64_t>(seed)};
    return;
  }
  check(!c.has("distill", "seed"), "{}: [distill] has both 'seed' and 'seeds'; keep one",
        c.where("distill", "seeds"));
  check(seeds.size() == 1 || experiment_repeats,
        "{}: [distill] seeds = {} lists several seeds, which only experiments groupwise and "
        "teacher_sparsity_sweep repeat; [experiment] kind = single takes one",
        c.where("distill", "seeds"), c.get_string("distill", "seeds"));
  s->seeds.clear();
  for (int64_t seed : seeds) {
    check(seed >= 0, "{}: [distill] seeds: {} is negative", c.where("distill", "seeds"), seed);
    check(std::find(s->seeds.begin(), s->seeds.end(), static_cast<uint64_t>(seed)) == s->seeds.end(),
          "{}: [distill] seeds: {} is listed twice", c.where("distill", "seeds"), seed);
    s->seeds.push_back(static_cast<uint64_t>(seed));
  }
}

// Keys that only some experiments read. Set for another kind, such a key would
// be ignored without a word (a forgotten `kind = groupwise` runs a single
// replacement instead), so it is an error.
struct KindSpecificKey {
  const char* section;
  const char* key;
  std::vector<std::string> kinds;  // the experiments that read it
  const char* instead;             // what the others use
};

void refuse_keys_of_other_kinds(const Config& c, const std::string& kind) {
  static const KindSpecificKey keys[] = {
      {"experiment", "groups", {"groupwise"}, "the layers of [layers] select"},
      {"experiment", "teachers", {"teacher_sparsity_sweep"}, "the one [teacher] model"},
      {"layers", "select", {"single", "teacher_sparsity_sweep"}, "the layer groups of [experiment] groups"},
      {"teacher", "model", {"single", "groupwise"}, "the teachers of [experiment] teachers"},
      {"teacher", "config", {"single", "groupwise"}, "each teacher's own config.json"},
  };
  for (const KindSpecificKey& k : keys) {
    const bool read = std::find(k.kinds.begin(), k.kinds.end(), kind) != k.kinds.end();
    check(read || !c.has(k.section, k.key),
          "{}: [{}] {} is not used by [experiment] kind = {}, which takes {}: remove it or change the kind",
          c.where(k.section, k.key), k.section, k.key, kind, k.instead);
  }
}

}  // namespace

DistillSettings DistillSettings::from_config(const Config& c) {
  DistillSettings s;
  s.teacher = c.get_string("teacher", "model", "");
  s.teacher_config = c.get_string("teacher", "config", "");
  s.read_data_settings(c);
  s.layers = c.get_string("layers", "select", s.layers);
  s.layers_where = c.where("layers", "select");
  s.sparsity_images = c.get_int_at_least("layers", "sparsity_images", s.sparsity_images, 1);
  s.mixer = c.get_string("student", "mixer", s.mixer);
  s.mixer_where = c.where("student", "mixer");
  // Fails early, naming the kinds and keys it knows.
  in_context(c, "student", "mixer", [&] { parse_mixer_spec(s.mixer); });
  s.budget_images = s.read_budget(c, "distill", s.budget_images);
  s.lr = c.get_double_above("distill", "lr", s.lr, 0.0);
  s.weight_decay = c.get_double_in("distill", "weight_decay", s.weight_decay, 0.0, INFINITY);
  s.cosine_weight = c.get_double_in("distill", "cosine_weight", s.cosine_weight, 0.0, INFINITY);
  s.warmup_fraction = c.get_double_in("distill", "warmup_fraction", s.warmup_fraction, 0.0, 1.0);
  s.finetune_images = s.read_budget(c, "finetune", s.finetune_images, /*zero_allowed=*/true);
  s.finetune_lr = c.get_double_above("finetune", "lr", s.finetune_lr, 0.0);
  s.temperature = c.get_double_above("finetune", "temperature", s.temperature, 0.0);
  s.kl_weight = c.get_double_in("finetune", "kl_weight", s.kl_weight, 0.0, INFINITY);
  s.finetune_params = c.get_choice("finetune", "params", s.finetune_params, {"students", "all"});
  s.latency_repeats = c.get_int_at_least("eval", "latency_repeats", s.latency_repeats, 1);
  s.latency_batches = read_latency_batches(c, s.latency_batches);
  s.experiment =
      c.get_choice("experiment", "kind", s.experiment, {"single", "groupwise", "teacher_sparsity_sweep"});
  refuse_keys_of_other_kinds(c, s.experiment);
  s.groups = c.get_string("experiment", "groups", s.groups);
  s.groups_where = c.where("experiment", "groups");
  read_seeds(c, &s);
  s.teachers = c.get_string("experiment", "teachers", "");
  if (s.experiment == "teacher_sparsity_sweep") {
    check(!s.teachers.empty(), "{}: experiment teacher_sparsity_sweep needs [experiment] teachers = name:path;...",
          c.where("experiment", "kind"));
    parse_teachers(s.teachers);  // fails early on a malformed list
  } else {
    if (s.teacher.empty()) c.fail_missing("teacher", "model");
  }
  s.out_dir = c.get_string("output", "dir", s.out_dir);
  s.overwrite = c.get_bool("output", "overwrite", false);
  return s;
}

namespace {

// The mean of x [B, N, ...] over the kept tokens (keep [B, N] 0/1; undefined: all).
Tensor token_mean(const Tensor& x, const Tensor& keep) {
  if (!keep.defined()) return mean(x);
  Tensor weights = keep.detach();
  while (weights.dim() < x.dim()) weights = unsqueeze(weights, -1);
  const double per_token = static_cast<double>(x.numel() / (x.size(0) * x.size(1)));
  return sum(x * weights) / (sum(weights) * per_token);
}

}  // namespace

Tensor distill_loss(const Tensor& prediction, const Tensor& target, double cosine_weight, const Tensor& keep) {
  Tensor variance;
  {
    NoGradGuard no_grad;  // a constant scale: the target carries no gradient
    variance = token_mean(pow(target - token_mean(target, keep), 2.0), keep);
  }
  Tensor loss = token_mean(pow(prediction - target, 2.0), keep) / add(variance, 1e-12);
  if (cosine_weight == 0.0) return loss;
  Tensor dot = sum(prediction * target, {-1});
  Tensor norms = sqrt(sum(prediction * prediction, {-1}) * sum(target * target, {-1}));
  Tensor cosine = token_mean(dot / add(norms, 1e-8), keep);
  return loss + (1.0 - cosine) * cosine_weight;
}

Tensor student_loss(TokenMixer& student, const BlockTrace& block, double cosine_weight, const Tensor& active) {
  ForwardContext ctx;
  ctx.active = active;
  return distill_loss(avit_mix(student, block.mixer_input, ctx), block.mixer_output, cosine_weight, active);
}

namespace {

// ------------------------------------------------------------------ data

struct Datasets {
  std::unique_ptr<data::LabeledDataset> train, test;
};

Datasets open_datasets(const DistillSettings& s) {
  return {data::open_dataset(s.data, s.train_subdir), data::open_dataset(s.data, s.test_subdir)};
}

// ------------------------------------------------------------------ sparsity

struct LayerSparsity {
  std::vector<double> k90, entropy;
  std::vector<int64_t> ranking;  // sparsest (smallest k90) first
};

LayerSparsity measure_sparsity(VisionTransformer& teacher, const data::Dataset& train, const DistillSettings& s) {
  // In float32 whatever [run] precision says: the layers chosen from the
  // ranking must not depend on it, so that runs in both precisions compare.
  const GemmPrecisionGuard float32(GemmPrecision::Float32);
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

// The log of one run (a group of layers or a sweep's teacher, and a seed):
// groupwise and sweep runs each count their steps from 0 again, so every
// record names its run.
struct RunLog {
  MetricsLog& log;
  json run;  // {"layers": "3,4", "seed": 0} or {"level": "avit_a", "seed": 0}

  void write(json record) const {
    record.update(run);
    log.write(record);
  }
};

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

// Step 3: every chosen layer's student learns the teacher's attention branch.
Students distill_layers(VisionTransformer& teacher, const std::vector<int64_t>& layers, const data::Dataset& train,
                        const DistillSettings& s, uint64_t seed, const RunLog& log) {
  Rng rng(seed);
  Students students;
  for (size_t k = 0; k < layers.size(); ++k) {
    students.push_back(make_mixer(teacher.config.mixer_spec(s.mixer), teacher.config.embed_dim, rng));
    move_parameters([&](const ParamVisitor& fn) { students.back()->visit("", fn); }, s.device);
  }
  std::vector<Tensor> params = student_parameters(students, layers);
  for (Tensor& p : params) p.set_requires_grad(true);
  auto optimizer = make_adamw(decay_groups(params, s.weight_decay), {s.lr});
  const int64_t steps = s.budget_images / s.batch_size;
  const WarmupCosineSchedule schedule = warmup_cosine(s.lr, steps, s.warmup_fraction);

  BatchStream stream(train, teacher.config.preprocess, s, seed);
  ProgressBar bar(fmt::format("distill {} layer(s)", layers.size()), steps * s.batch_size);
  for (int64_t step = 0; step < steps; ++step) {
    Tensor images, labels;
    stream.next(&images, &labels);
    ForwardTrace trace;
    trace.last_block = layers.back();
    HaltingTrace halting;
    {
      NoGradGuard no_grad;  // the teacher is frozen: one forward feeds every student
      if (teacher.config.halting) avit_forward_tokens(teacher, images, {}, &halting, &trace);
      else teacher.forward_tokens(images, {}, &trace);
    }
    Tensor total;
    std::vector<Tensor> layer_losses;
    for (size_t k = 0; k < layers.size(); ++k) {
      const BlockTrace& block = trace.blocks[layers[k]];
      // An A-ViT teacher: the student learns the retained tokens only, and
      // treats the halted ones as absent (avit_mix), as the hybrid's
      // compacted inference does.
      const Tensor active = halting.active.empty() ? Tensor() : halting.active[layers[k]];
      Tensor loss = student_loss(*students[k], block, s.cosine_weight, active);
      layer_losses.push_back(loss);
      total = total.defined() ? total + loss : loss;
    }
    optimizer->zero_grad();
    total.backward();
    optimizer->set_lr(schedule.lr_at(step));
    optimizer->step();
    std::string status;
    if (is_log_step(step, steps)) {
      json per_layer = json::object();
      for (size_t k = 0; k < layers.size(); ++k) per_layer[std::to_string(layers[k])] = layer_losses[k].item<double>();
      const double mean_loss = total.item<double>() / layers.size();
      log.write({{"phase", "distill"}, {"step", step}, {"lr", optimizer->lr()}, {"loss", mean_loss},
                 {"layer_loss", per_layer}});
      status = fmt::format("loss {:.4f}", mean_loss);
    }
    bar.update(s.batch_size, status);  // an empty status keeps the last one shown
  }
  bar.finish();
  for (Tensor& p : params) p.set_requires_grad(false);
  return students;
}

std::unique_ptr<VisionTransformer> load_teacher(const std::string& path, const DistillSettings& s) {
  VitLoadOptions options;
  options.config_path = s.teacher_config;
  auto teacher = load_vit(path, options);
  teacher->to(s.device);
  return teacher;
}

// Step 4: a fresh copy of the teacher with the students in place of attention
// (an A-ViT teacher's copy keeps its halting settings).
std::unique_ptr<VisionTransformer> splice(const std::string& teacher_path, const DistillSettings& s,
                                          const std::vector<int64_t>& layers, Students students) {
  auto hybrid = load_teacher(teacher_path, s);
  for (size_t k = 0; k < layers.size(); ++k) {
    hybrid->blocks[layers[k]].mixer = std::move(students[k]);
    hybrid->config.mixers[layers[k]] = s.mixer;
  }
  return hybrid;
}

// The forward for training: the masked path for an A-ViT (models/avit.h).
Tensor training_logits(VisionTransformer& model, const Tensor& images) {
  return model.config.halting ? avit_forward(model, images) : model.forward(images);
}

// Step 5: CE + temperature-scaled KL to the teacher's logits.
void finetune(VisionTransformer& hybrid, VisionTransformer& teacher, const std::vector<int64_t>& layers,
              const data::Dataset& train, const DistillSettings& s, uint64_t seed, const RunLog& log) {
  std::vector<Tensor> params;
  for (auto& [name, p] : hybrid.named_parameters()) {
    const bool in_student = std::any_of(layers.begin(), layers.end(), [&](int64_t i) {
      return name.rfind(fmt::format("blocks.{}.attn.", i), 0) == 0;
    });
    if (s.finetune_params == "all" || in_student) params.push_back(p.set_requires_grad(true));
  }
  auto optimizer = make_adamw(decay_groups(params, s.weight_decay), {s.finetune_lr});
  const int64_t steps = s.finetune_images / s.batch_size;
  const WarmupCosineSchedule schedule = warmup_cosine(s.finetune_lr, steps, s.warmup_fraction);
  BatchStream stream(train, teacher.config.preprocess, s, data::mix_seed(seed, kFinetuneStream));
  ProgressBar bar("fine-tune", steps * s.batch_size);
  for (int64_t step = 0; step < steps; ++step) {
    Tensor images, labels, teacher_logits;
    stream.next(&images, &labels);
    {
      NoGradGuard no_grad;
      teacher_logits = training_logits(teacher, images);
    }
    Tensor logits = training_logits(hybrid, images);
    const Tensor ce = cross_entropy(logits, labels);
    const Tensor kl = kl_div_with_temperature(logits, teacher_logits, s.temperature);
    Tensor loss = ce + kl * s.kl_weight;
    optimizer->zero_grad();
    loss.backward();
    optimizer->set_lr(schedule.lr_at(step));
    optimizer->step();
    std::string status;
    if (is_log_step(step, steps)) {
      const double value = loss.item<double>();
      log.write({{"phase", "finetune"},
                 {"step", step},
                 {"lr", optimizer->lr()},
                 {"loss", value},
                 {"ce", ce.item<double>()},
                 {"kl", kl.item<double>()}});
      status = fmt::format("loss {:.4f}", value);
    }
    bar.update(s.batch_size, status);
  }
  bar.finish();
  for (Tensor& p : params) p.set_requires_grad(false);
}

// ------------------------------------------------------------------ evaluation

// Top-1 and friends on the test set.
json model_report(VisionTransformer& model, const data::Dataset& test, const DistillSettings& s, const char* label) {
  fmt::print("evaluating the {}\n", label);
  // An A-ViT is evaluated with tokens really dropped, counting the tokens kept.
  return evaluation_report(evaluate_model(model, test, s.eval_options()), model);
}

// Adds latency_ms_b<N> (and on a GPU graph_latency_ms_b<N>) at each of
// s.latency_batches to reports[i], the report of models[i]. The models are
// timed together, taking turns, so a teacher and its hybrid are compared
// under the same conditions (time_models).
void add_latencies(const std::vector<VisionTransformer*>& models, const std::vector<json*>& reports,
                   const data::Dataset& test, const DistillSettings& s) {
  check(models.size() == reports.size(), "add_latencies: {} models, {} reports", models.size(), reports.size());
  const LatencyTable table = time_models(models, test, s.latency_batches, s.latency_repeats, s.device);
  for (size_t i = 0; i < models.size(); ++i) {
    for (size_t b = 0; b < table.batches.size(); ++b) {
      json& report = *reports[i];
      report[fmt::format("latency_ms_b{}", table.batches[b])] = table.eager_ms[i][b];
      if (!table.graph_ms.empty()) report[fmt::format("graph_latency_ms_b{}", table.batches[b])] = table.graph_ms[i][b];
    }
  }
}

// ------------------------------------------------------------------ runs

// Steps 3-5 for one seed: the students of `layers` distilled from the teacher
// (loaded from teacher_path), spliced in, and fine-tuned if asked.
std::unique_ptr<VisionTransformer> distilled_hybrid(VisionTransformer& teacher, const std::string& teacher_path,
                                                    const std::vector<int64_t>& layers, const Datasets& datasets,
                                                    const DistillSettings& s, uint64_t seed, const RunLog& log) {
  auto hybrid = splice(teacher_path, s, layers, distill_layers(teacher, layers, *datasets.train, s, seed, log));
  if (s.finetune_images > 0) finetune(*hybrid, teacher, layers, *datasets.train, s, seed, log);
  return hybrid;
}

// The hybrid's result of every seed, and their spread: `key` is what the
// experiment compares (a group's drop, a sweep level's gap, in points).
struct SeededRuns {
  json per_seed = json::array();  // [{"seed", "top1", key}, ...]
  std::vector<double> top1, compared;

  void add(uint64_t seed, double hybrid_top1, double value, const char* key) {
    per_seed.push_back({{"seed", seed}, {"top1", hybrid_top1}, {key, value}});
    top1.push_back(hybrid_top1);
    compared.push_back(value);
  }
  // Mean top-1 and mean / std of the compared value under `key`.
  void summarize(json& into, const char* top1_key, const char* key) const {
    const Spread value = spread_of(compared);
    into[top1_key] = spread_of(top1).mean;
    into[key] = value.mean;
    into[std::string(key) + "_std"] = value.std;
    into["seeds"] = per_seed;
  }
};

// ------------------------------------------------------------------ outputs

double mean_over(const std::vector<double>& values, const std::vector<int64_t>& layers) {
  double total = 0;
  for (int64_t i : layers) total += values[i];
  return total / layers.size();
}

using Teachers = std::vector<std::unique_ptr<VisionTransformer>>;

// The checkpoints of the run's teachers: the sweep's levels in order, else the one.
std::vector<std::string> teacher_paths(const DistillSettings& s) {
  if (s.experiment != "teacher_sparsity_sweep") return {s.teacher};
  std::vector<std::string> paths;
  for (const NamedTeacher& level : parse_teachers(s.teachers)) paths.push_back(level.path);
  return paths;
}

// The run's teachers (the sweep's levels in order, else the one), each loaded
// once and checked for what the run would otherwise meet only after its first
// long phase: a head for the data's classes, and a layer choice (or groups)
// that fits its depth (any ranking serves: only the syntax and the ranges
// matter here).
Teachers load_checked_teachers(const DistillSettings& s, const Datasets& datasets) {
  Teachers teachers;
  for (const std::string& path : teacher_paths(s)) {
    teachers.push_back(load_teacher(path, s));
    const VitConfig& config = teachers.back()->config;
    check_labels_fit(config, *datasets.train);
    check_labels_fit(config, *datasets.test);
    // One student built now, so that a bad value in the spec (a width of 0)
    // fails before any work rather than after the sparsity analysis.
    Rng rng(0);
    in_context(s.mixer_where, "student", "mixer",
               [&] { make_mixer(config.mixer_spec(s.mixer), config.embed_dim, rng); });
    std::vector<int64_t> any_ranking(static_cast<size_t>(config.depth));
    std::iota(any_ranking.begin(), any_ranking.end(), 0);
    if (s.experiment == "groupwise") {
      in_context(s.groups_where, "experiment", "groups", [&] { parse_groups(s.groups, config.depth, any_ranking); });
    } else {
      in_context(s.layers_where, "layers", "select", [&] { select_layers(s.layers, config.depth, any_ranking); });
    }
  }
  return teachers;
}

// The same layers distilled under the same budget and seeds from teachers at
// different token retention (a dense ViT, A-ViTs; `teachers` in the order of
// [experiment] teachers): does the student-teacher gap shrink as the teacher
// gets sparser? The layer set comes from the first teacher.
json teacher_sparsity_sweep(const DistillSettings& s, const Datasets& datasets, const Teachers& teachers,
                            MetricsLog& log) {
  std::vector<int64_t> layers;
  json levels = json::array();
  std::vector<ScatterPoint> points;
  const std::vector<NamedTeacher> named = parse_teachers(s.teachers);
  for (size_t t = 0; t < named.size(); ++t) {
    const NamedTeacher& level = named[t];
    fmt::print("teacher '{}': {}\n", level.name, level.path);
    VisionTransformer* teacher = teachers[t].get();
    const LayerSparsity sparsity = measure_sparsity(*teacher, *datasets.train, s);
    if (layers.empty()) layers = select_layers(s.layers, teacher->config.depth, sparsity.ranking);
    json teacher_report = model_report(*teacher, *datasets.test, s, "teacher");
    const double teacher_top1 = teacher_report["top1"];
    std::vector<int64_t> all(sparsity.k90.size());
    std::iota(all.begin(), all.end(), 0);
    json row = {{"name", level.name},
                {"teacher", level.path},
                {"halting", teacher->config.halting.has_value()},
                {"teacher_top1", teacher_top1},
                {"mean_retention", teacher_report["mean_retention"]},
                {"k90", mean_over(sparsity.k90, layers)},
                {"k90_all_layers", mean_over(sparsity.k90, all)}};
    SeededRuns runs;
    for (uint64_t seed : s.seeds) {
      const RunLog run_log{log, {{"level", level.name}, {"seed", seed}}};
      auto hybrid = distilled_hybrid(*teacher, level.path, layers, datasets, s, seed, run_log);
      json hybrid_report = model_report(*hybrid, *datasets.test, s, "hybrid");
      // Latency does not depend on the seed: the first seed's hybrid is timed, with the teacher.
      if (runs.top1.empty()) {
        add_latencies({teacher, hybrid.get()}, {&teacher_report, &hybrid_report}, *datasets.test, s);
        row["teacher_report"] = teacher_report;
        row["hybrid_report"] = hybrid_report;
        row["hybrid_mean_retention"] = hybrid_report["mean_retention"];
      }
      const double top1 = hybrid_report["top1"];
      runs.add(seed, top1, 100.0 * (teacher_top1 - top1), "gap");
      log.write({{"phase", "sweep_run"}, {"level", level.name}, {"seed", seed}, {"top1", top1}});
    }
    runs.summarize(row, "hybrid_top1", "gap");
    log.write({{"phase", "sweep_level"}, {"level", row}});
    points.push_back({row["mean_retention"], row["gap"], level.name, row["gap_std"]});
    levels.push_back(row);
  }
  write_file_atomic((fs::path(s.out_dir) / "gap_vs_retention.svg").string(),
                    scatter_svg(points, "teacher's mean token retention", "teacher - hybrid top-1 (points)"));
  json results = {{"experiment", "teacher_sparsity_sweep"}, {"mixer", s.mixer}, {"layers", layers},
                  {"budget_images", s.budget_images}, {"finetune_images", s.finetune_images},
                  {"seeds", s.seeds}, {"device", s.device.str()}, {"precision", s.precision}, {"levels", levels},
                  {"plot", "gap_vs_retention.svg"}};
  write_json_atomic((fs::path(s.out_dir) / "results.json").string(), results);
  return results;
}

// Spearman's rho between the groups' k90 and their mean drop with its
// permutation p-value, and, with several seeds, each seed's own rho (how much
// of it is the seeds' noise).
void write_rank_correlation(const DistillSettings& s, const json& groups, json& results) {
  std::vector<double> k90, drop;
  for (const json& g : groups) {
    k90.push_back(g["k90"]);
    drop.push_back(g["drop"]);
  }
  results["spearman_rho"] = nullptr;
  if (k90.size() < 2) return;
  const double rho = spearman_rho(k90, drop);
  if (!std::isnan(rho)) {
    results["spearman_rho"] = rho;
    results["spearman_p"] = spearman_permutation_p(k90, drop);
  }
  if (s.seeds.size() > 1) {
    json per_seed = json::array();
    for (size_t r = 0; r < s.seeds.size(); ++r) {
      std::vector<double> seed_drop;
      for (const json& g : groups) seed_drop.push_back(g["seeds"][r]["drop"]);
      const double seed_rho = spearman_rho(k90, seed_drop);
      per_seed.push_back(std::isnan(seed_rho) ? json(nullptr) : json(seed_rho));
    }
    results["spearman_rho_per_seed"] = per_seed;
  }
  std::vector<ScatterPoint> points;
  for (const json& g : groups) points.push_back({g["k90"], g["drop"], g["name"], g["drop_std"]});
  write_file_atomic((fs::path(s.out_dir) / "drop_vs_k90.svg").string(),
                    scatter_svg(points, "mean k90 of the replaced layers (tokens)", "top-1 drop (points)"));
}

}  // namespace

json run_distill(const DistillSettings& s) {
  const GemmPrecisionGuard gemm_precision(parse_gemm_precision(s.precision, s.device));
  Datasets datasets = open_datasets(s);
  const Teachers teachers = load_checked_teachers(s, datasets);
  // Only now: a bad input leaves an old run as it was. (The teachers are read
  // again for every splice, so none may lie in what is removed.)
  std::vector<std::string> inputs = teacher_paths(s);
  inputs.push_back(s.teacher_config);
  std::vector<std::string> outputs = atomic_directory_names("hybrid");
  outputs.insert(outputs.end(), {"results.json", "metrics.jsonl", "drop_vs_k90.svg", "gap_vs_retention.svg"});
  prepare_out_dir(s.out_dir, s.overwrite, outputs, inputs);
  MetricsLog log((fs::path(s.out_dir) / "metrics.jsonl").string());
  if (s.experiment == "teacher_sparsity_sweep") return teacher_sparsity_sweep(s, datasets, teachers, log);
  VisionTransformer* teacher = teachers.front().get();
  const int64_t depth = teacher->config.depth;

  const bool groupwise = s.experiment == "groupwise";
  const bool ranking_needed = needs_ranking(s.layers) || groupwise;
  LayerSparsity sparsity;
  if (ranking_needed) sparsity = measure_sparsity(*teacher, *datasets.train, s);
  json results = {{"mixer", s.mixer}, {"budget_images", s.budget_images},
                  {"finetune_images", s.finetune_images}, {"seeds", s.seeds}, {"device", s.device.str()},
                  {"precision", s.precision}};
  if (ranking_needed) {
    results["sparsity"] = {{"k90", sparsity.k90}, {"entropy", sparsity.entropy}, {"ranking", sparsity.ranking},
                           {"images", s.sparsity_images}};
  }
  json teacher_report = model_report(*teacher, *datasets.test, s, "teacher");
  // The group-wise experiment compares accuracy only: its hybrids are not timed.
  if (groupwise) add_latencies({teacher}, {&teacher_report}, *datasets.test, s);
  const double teacher_top1 = teacher_report["top1"];

  std::vector<std::vector<int64_t>> groups = groupwise ? parse_groups(s.groups, depth, sparsity.ranking)
                                                       : std::vector<std::vector<int64_t>>{
                                                             select_layers(s.layers, depth, sparsity.ranking)};
  json group_results = json::array();
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::vector<int64_t>& layers = groups[g];
    const std::string name = join_indices(layers, ",");
    json group = {{"name", name}, {"layers", layers}};
    SeededRuns runs;
    for (uint64_t seed : s.seeds) {
      fmt::print("group {}/{}: replacing layer(s) {} with {} (seed {})\n", g + 1, groups.size(), name, s.mixer, seed);
      const RunLog run_log{log, {{"layers", name}, {"seed", seed}}};
      auto hybrid = distilled_hybrid(*teacher, s.teacher, layers, datasets, s, seed, run_log);
      json report = model_report(*hybrid, *datasets.test, s, "hybrid");
      const double top1 = report["top1"];
      runs.add(seed, top1, 100.0 * (teacher_top1 - top1), "drop");
      if (!groupwise) {  // single: one seed
        add_latencies({teacher, hybrid.get()}, {&teacher_report, &report}, *datasets.test, s);
        results["student"] = report;
        results["replaced_layers"] = layers;
        // As one folder: never a config.json of one model beside another's weights.
        write_directory_atomically((fs::path(s.out_dir) / "hybrid").string(),
                                   [&](const std::string& staging) { save_vit(*hybrid, staging); });
      }
    }
    runs.summarize(group, "top1", "drop");
    if (ranking_needed) {
      group["k90"] = mean_over(sparsity.k90, layers);
      group["entropy"] = mean_over(sparsity.entropy, layers);
    }
    log.write({{"phase", "group"}, {"group", group}});
    group_results.push_back(group);
  }
  results["teacher"] = teacher_report;
  results["groups"] = group_results;
  results["spearman_rho"] = nullptr;
  if (groupwise) write_rank_correlation(s, group_results, results);
  write_json_atomic((fs::path(s.out_dir) / "results.json").string(), results);
  return results;
}

}  // namespace engine

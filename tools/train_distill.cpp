// ./train_distill config.ini [--set section.key=value ...]
// Layer-wise replacement of a ViT's attention by sequential mixers (see
// train/distill.h); prints a teacher-vs-hybrid table and writes OUT/results.json.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "engine/cli.h"
#include "train/distill.h"

using namespace engine;

namespace {

// " +- std" after a mean over several seeds (nothing for one).
std::string spread(const nlohmann::json& row, const char* key, size_t seeds) {
  return seeds > 1 ? fmt::format(" +- {:.2f}", row.at(std::string(key) + "_std").get<double>()) : "";
}

// experiment = teacher_sparsity_sweep: one row per teacher (hybrid: mean over seeds).
void print_sweep_table(const nlohmann::json& results) {
  const size_t seeds = results.at("seeds").size();
  fmt::print("\n{:<10} {:>12} {:>10} {:>8} {:>11} {:>11}\n", "teacher", "teacher top-1", "retention", "k90",
             "hybrid top-1", "gap (pts)");
  for (const auto& level : results.at("levels")) {
    fmt::print("{:<10} {:>11.2f}% {:>9.1f}% {:>8.2f} {:>10.2f}% {:>11.2f}{}\n", level.at("name").get<std::string>(),
               100 * level.at("teacher_top1").get<double>(), 100 * level.at("mean_retention").get<double>(),
               level.at("k90").get<double>(), 100 * level.at("hybrid_top1").get<double>(),
               level.at("gap").get<double>(), spread(level, "gap", seeds));
  }
  if (seeds > 1) fmt::print("(hybrids: mean +- standard deviation over {} seeds)\n", seeds);
}

// The latency columns of a report: its latency_ms_b<N> keys (the batches it
// was timed at), then on a GPU the graph_latency_ms_b<N> ones.
std::vector<std::string> latency_keys(const nlohmann::json& report) {
  std::vector<std::pair<int64_t, std::string>> timed;
  const std::string prefix = "latency_ms_b";
  for (const auto& [key, value] : report.items()) {
    if (key.rfind(prefix, 0) == 0) timed.emplace_back(std::stoll(key.substr(prefix.size())), key);
  }
  std::sort(timed.begin(), timed.end());
  std::vector<std::string> keys;
  for (const auto& [batch, key] : timed) keys.push_back(key);
  for (const auto& [batch, key] : timed) {
    if (report.contains("graph_" + key)) keys.push_back("graph_" + key);
  }
  return keys;
}

// "ms @ b256" for latency_ms_b256, "graph b256" for graph_latency_ms_b256.
std::string column_title(const std::string& key) {
  const std::string batch = key.substr(key.rfind('b'));
  return key.rfind("graph_", 0) == 0 ? "graph " + batch : "ms @ " + batch;
}

// experiment = single or groupwise: teacher vs hybrid (latency at each timed
// batch size; on a GPU also of the forward replayed as one graph), then the groups.
void print_table(const nlohmann::json& results) {
  const std::vector<std::string> latencies = latency_keys(results.at("teacher"));
  auto row = [&latencies](const char* name, const nlohmann::json& r) {
    fmt::print("{:<8} {:>7.2f}% {:>10} {:>8.3f}", name, 100 * r.at("top1").get<double>(), r.at("params").get<int64_t>(),
               r.at("gflops").get<double>());
    for (const std::string& key : latencies) fmt::print(" {:>11.2f}", r.value(key, 0.0));
    fmt::print("\n");
  };
  fmt::print("\n{:<8} {:>8} {:>10} {:>8}", "model", "top-1", "params", "GFLOPs");
  for (const std::string& key : latencies) fmt::print(" {:>11}", column_title(key));
  fmt::print("\n");
  row("teacher", results.at("teacher"));
  if (results.contains("student")) row("hybrid", results.at("student"));
  const size_t seeds = results.at("seeds").size();
  for (const auto& g : results.value("groups", nlohmann::json::array())) {
    fmt::print("layers {:<12} top-1 {:.2f}%  drop {:+.2f}{} pts{}\n", g.at("name").get<std::string>(),
               100 * g.at("top1").get<double>(), g.at("drop").get<double>(), spread(g, "drop", seeds),
               g.contains("k90") ? fmt::format("  k90 {:.2f}", g.at("k90").get<double>()) : "");
  }
  if (seeds > 1 && results.contains("groups")) fmt::print("(groups: mean +- standard deviation over {} seeds)\n", seeds);
  if (results.contains("spearman_rho") && !results.at("spearman_rho").is_null()) {
    fmt::print("Spearman rho (k90 vs mean drop): {:.3f} (two-sided permutation p = {:.3f})\n",
               results.at("spearman_rho").get<double>(), results.at("spearman_p").get<double>());
  }
  if (results.contains("spearman_rho_per_seed")) {
    fmt::print("Spearman rho per seed: {}\n", results.at("spearman_rho_per_seed").dump());
  }
}

int distill_main(int argc, char** argv) {
  Flags flags("train_distill CONFIG.ini [--set section.key=value]",
              {config_override_flag("distill.budget_images=1000[,student.mixer=mamba]")},
              {"CONFIG"});
  if (!flags.parse(argc, argv)) return 0;
  check(flags.positional().size() == 1, "expected a config file (see --help)");
  Config config = Config::load(flags.positional()[0]);
  apply_config_overrides(flags, config);
  DistillSettings settings = DistillSettings::from_config(config);
  config.check_all_used();
  nlohmann::json results = run_distill(settings);
  if (results.value("experiment", "") == "teacher_sparsity_sweep") {
    print_sweep_table(results);
  } else {
    print_table(results);
  }
  fmt::print("results: {}/results.json\n", settings.out_dir);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_tool("train_distill", distill_main, argc, argv); }

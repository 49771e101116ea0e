// ./train_avit config.ini [--set section.key=value ...]
// Fine-tunes a pretrained ViT into an A-ViT that halts tokens (see train/avit.h);
// prints retention, top-1 and speed against the teacher; writes OUT/results.json,
// depth maps and the checkpoint OUT/avit/.
#include "engine/cli.h"
#include "train/avit.h"

using namespace engine;

namespace {

void print_summary(const nlohmann::json& r) {
  const nlohmann::json& avit = r["avit"];
  fmt::print("\ntokens entering each layer (%):");
  for (double kept : avit["retention"]) fmt::print(" {:.1f}", 100 * kept);
  fmt::print("\n{:<8} {:>8} {:>10} {:>8}", "model", "top-1", "retained", "GFLOPs");
  for (const auto& [batch, ms] : r["teacher"]["latency_ms"].items()) fmt::print(" {:>10}", "ms @ " + batch);
  fmt::print("\n{:<8} {:>7.2f}% {:>9.1f}% {:>8.3f}", "teacher", 100 * r["teacher"]["top1"].get<double>(),
             100 * r["teacher"]["mean_retention"].get<double>(), r["teacher"]["gflops"].get<double>());
  for (const auto& [batch, ms] : r["teacher"]["latency_ms"].items()) fmt::print(" {:>10.2f}", ms.get<double>());
  fmt::print("\n{:<8} {:>7.2f}% {:>9.1f}% {:>8.3f}", "A-ViT", 100 * avit["top1"].get<double>(),
             100 * avit["mean_retention"].get<double>(), avit["gflops"].get<double>());
  for (const auto& [batch, ms] : avit["latency_ms"].items()) fmt::print(" {:>10.2f}", ms.get<double>());
  fmt::print("\nspeed-up (tokens dropped):");
  for (const auto& [batch, x] : r["speedup"].items()) fmt::print(" {} {:.2f}x", batch, x.get<double>());
  fmt::print("\n");
}

int avit_main(int argc, char** argv) {
  Flags flags("train_avit CONFIG.ini [--set section.key=value]",
              {config_override_flag("halting.target_depth=6[,train.budget_images=4096]")},
              {"CONFIG"});
  if (!flags.parse(argc, argv)) return 0;
  check(flags.positional().size() == 1, "expected a config file (see --help)");
  Config config = Config::load(flags.positional()[0]);
  apply_config_overrides(flags, config);
  AvitSettings settings = AvitSettings::from_config(config);
  config.check_all_used();
  nlohmann::json results = run_avit(settings);
  print_summary(results);
  fmt::print("results: {}/results.json\n", settings.out_dir);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_tool("train_avit", avit_main, argc, argv); }

// ./pretrain config.ini [section.key=value ...] [--set section.key=value,...]
// Trains a ViT from scratch (see train/pretrain.h); writes OUT/metrics.jsonl,
// OUT/checkpoint/ and OUT/results.json.
#include "engine/cli.h"
#include "train/pretrain.h"

using namespace engine;

namespace {

int pretrain_main(int argc, char** argv) {
  Flags flags("pretrain CONFIG.ini [section.key=value ...] [--set section.key=value,...]",
              {config_override_flag("train.epochs=10[,run.device=cuda]")},
              {"CONFIG", "OVERRIDES..."});
  if (!flags.parse(argc, argv)) return 0;
  check(!flags.positional().empty(), "expected a config file (see --help)");
  Config config = Config::load(flags.positional()[0]);
  for (size_t i = 1; i < flags.positional().size(); ++i) config.apply_override(flags.positional()[i]);
  apply_config_overrides(flags, config);
  const PretrainSettings settings = PretrainSettings::from_config(config);
  config.check_all_used();
  const nlohmann::json r = run_pretrain(settings);
  const std::string accuracy =
      r["last_top1"].is_null() ? "not evaluated yet"
                               : fmt::format("top-1 {:.2f}% (best {:.2f}%)", 100 * r["last_top1"].get<double>(),
                                             100 * r["best_top1"].get<double>());
  fmt::print("{} after {:.1f} of {} epochs: {}, {:.0f} img/s, {:.0f} s\n",
             r["finished"].get<bool>() ? "finished" : "stopped", r["epochs_done"].get<double>(),
             r["epochs"].get<int64_t>(), accuracy, r["images_per_second"].get<double>(),
             r["wall_seconds"].get<double>());
  fmt::print("results: {}/results.json, checkpoint: {}\n", settings.out_dir, r["checkpoint"].get<std::string>());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_tool("pretrain", pretrain_main, argc, argv); }

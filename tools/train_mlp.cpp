// ./train_mlp config.ini [--set section.key=value,...] — trains the MLP demo classifier on an IDX dataset
// (Fashion-MNIST by default) and writes OUT/metrics.jsonl and OUT/results.json.
#include <filesystem>

#include "data/idx.h"
#include "engine/cli.h"
#include "engine/config.h"
#include "train/batch_stream.h"
#include "train/metrics.h"
#include "train/mlp_classifier.h"

using namespace engine;

static int train_mlp_main(int argc, char** argv) {
  Flags flags("train_mlp CONFIG.ini [--set section.key=value,...]",
              {config_override_flag("train.epochs=1[,model.hidden=64]")}, {"CONFIG"});
  if (!flags.parse(argc, argv)) return 0;
  check(flags.positional().size() == 1, "expected a config file (see --help)");
  Config config = Config::load(flags.positional()[0]);
  apply_config_overrides(flags, config);

  const std::string data_dir = config.get_string("data", "dir", "/usr/share/datasets/fashion-mnist");
  MlpTrainSpec spec = read_mlp_train_spec(config);
  const std::string out_dir = config.get_string("output", "dir", "runs/mlp");
  const bool overwrite = config.get_bool("output", "overwrite", false);
  config.check_all_used();
  check(std::filesystem::exists(data_dir),
        "data dir '{}' not found: install Debian's dataset-fashion-mnist (make install-deps) or download "
        "Fashion-MNIST from https://github.com/zalandoresearch/fashion-mnist and set [data] dir",
        data_dir);

  auto train = data::IdxDataset::from_dir(data_dir, data::Split::Train);
  auto test = data::IdxDataset::from_dir(data_dir, data::Split::Test);
  fmt::print("{}: {} train and {} test images of {}x{}, {} classes\n", data_dir, train.size(), test.size(),
             train.height(), train.width(), train.num_classes());
  check_test_matches_train(train, test);
  prepare_out_dir(out_dir, overwrite, {"results.json", "metrics.jsonl"});  // after the inputs: a bad one keeps an old run
  spec.metrics_path = out_dir + "/metrics.jsonl";  // train_mlp_classifier creates the folder
  MlpTrainResult result = train_mlp_classifier(train, test, spec);
  write_json_atomic(out_dir + "/results.json", {{"test_accuracy", result.test_accuracy},
                                                {"train_loss", result.train_loss},
                                                {"images_per_second", result.images_per_second},
                                                {"parameters", result.parameters},
                                                {"epochs", spec.epochs}});
  fmt::print("test accuracy {:.2f}%  ({} parameters, {:.0f} img/s) -> {}/results.json\n", 100 * result.test_accuracy,
             result.parameters, result.images_per_second, out_dir);
  return 0;
}

int main(int argc, char** argv) { return run_tool("train_mlp", train_mlp_main, argc, argv); }

// ./vit_init --preset NAME --out DIR [--num-classes N] [--seed S] [--overwrite]
// Writes a randomly initialised ViT (timm-style init) as DIR/model.safetensors +
// DIR/config.json, loadable by every tool here and by timm. DIR must be new or
// empty unless --overwrite, which first removes the checkpoint there (a sharded
// one too), so that no loader finds two.
#include <filesystem>

#include "engine/cli.h"
#include "models/vit_checkpoint.h"
#include "train/batch_stream.h"

using namespace engine;

namespace {

// A model folder's checkpoint files, single-file or sharded (model-00001-of-00002.safetensors, ...).
const std::vector<std::string> kCheckpointFiles = {"model.safetensors", "model.safetensors.index.json", "model-*",
                                                   "config.json"};

// A model folder is not replaced by accident: only a new or empty one, or with --overwrite.
void check_replaceable(const std::string& out, bool overwrite) {
  namespace fs = std::filesystem;
  if (!fs::exists(out)) return;
  check(fs::is_directory(out), "--out '{}' is a file, not a folder", out);
  check(overwrite || fs::is_empty(out),
        "--out '{}' already exists and is not empty: choose another folder, or pass --overwrite to replace the "
        "checkpoint in it",
        out);
}

}  // namespace

static int vit_init_main(int argc, char** argv) {
  Flags flags("vit_init --preset NAME --out DIR [flags]",
              {{"preset", fmt::format("architecture: {}", fmt::join(vit_preset_names(), ", ")), ""},
               {"out", "output folder", ""},
               {"num-classes", "override the number of classes (0 = preset's)", "0"},
               {"seed", "initialisation seed", "0"},
               {"overwrite", "write into an existing non-empty --out folder", "", true}});
  if (!flags.parse(argc, argv)) return 0;
  check(!flags.get("preset").empty() && !flags.get("out").empty(), "--preset and --out are required (see --help)");
  VitConfig config = vit_preset(flags.get("preset"));
  const int64_t num_classes = flags.get_int_at_least("num-classes", 0);
  if (num_classes > 0) config.num_classes = num_classes;
  const auto seed = static_cast<uint64_t>(flags.get_int_at_least("seed", 0));
  check_replaceable(flags.get("out"), flags.get_bool("overwrite"));
  VisionTransformer model(config, seed);
  prepare_out_dir(flags.get("out"), /*overwrite=*/true, kCheckpointFiles);  // checked above
  save_vit(model, flags.get("out"));
  fmt::print("wrote {} ({} parameters) to {}\n", flags.get("preset"), model.num_parameters(), flags.get("out"));
  return 0;
}

int main(int argc, char** argv) { return run_tool("vit_init", vit_init_main, argc, argv); }

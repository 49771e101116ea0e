// ./vit_init --preset NAME --out DIR [--num-classes N] [--seed S]
// Writes a randomly initialised ViT (timm-style init) as DIR/model.safetensors +
// DIR/config.json, loadable by every tool here and by timm.
#include "engine/cli.h"
#include "models/vit_checkpoint.h"

using namespace engine;

static int vit_init_main(int argc, char** argv) {
  Flags flags("vit_init --preset NAME --out DIR [flags]",
              {{"preset", fmt::format("architecture: {}", fmt::join(vit_preset_names(), ", ")), ""},
               {"out", "output folder", ""},
               {"num-classes", "override the number of classes (0 = preset's)", "0"},
               {"seed", "initialisation seed", "0"}});
  if (!flags.parse(argc, argv)) return 0;
  check(!flags.get("preset").empty() && !flags.get("out").empty(), "--preset and --out are required (see --help)");
  VitConfig config = vit_preset(flags.get("preset"));
  if (flags.get_int("num-classes") > 0) config.num_classes = flags.get_int("num-classes");
  VisionTransformer model(config, static_cast<uint64_t>(flags.get_int("seed")));
  save_vit(model, flags.get("out"));
  fmt::print("wrote {} ({} parameters) to {}\n", flags.get("preset"), model.num_parameters(), flags.get("out"));
  return 0;
}

int main(int argc, char** argv) { return run_tool("vit_init", vit_init_main, argc, argv); }

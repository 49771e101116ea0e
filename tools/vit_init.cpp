// ./vit_init --preset NAME --out DIR [--num-classes N] [--seed S] [--overwrite]
// Writes a randomly initialised ViT (timm-style init) as DIR/model.safetensors +
// DIR/config.json, loadable by every tool here and by timm. DIR must be new or
// empty unless --overwrite, which replaces the checkpoint there (a sharded one
// too, once the new one is written), so that no loader finds two.
#include <filesystem>
#include <set>

#include "engine/cli.h"
#include "engine/safetensors.h"
#include "models/vit_checkpoint.h"

using namespace engine;

namespace {

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

// The shard files that the index of an earlier sharded checkpoint names. A bad
// index fails, saying that the new checkpoint is written and what is left to remove.
std::set<std::string> earlier_shard_files(const std::string& index, const std::string& written) {
  try {
    std::set<std::string> shards;
    for (const auto& [name, shard] : read_weight_map(index)) shards.insert(shard);
    return shards;
  } catch (const Error& error) {
    fail("wrote {}, but {}; remove that index and its shards by hand", written, error.what());
  }
}

// Removes a sharded checkpoint that `out` held before: its index and the shard
// files the index names, nothing else. Called after the new model.safetensors
// is written (atomically), so a failed write leaves the old checkpoint whole.
void remove_earlier_sharded_checkpoint(const std::string& out) {
  namespace fs = std::filesystem;
  const fs::path index = fs::path(out) / "model.safetensors.index.json";
  if (!fs::exists(index)) return;
  const std::set<std::string> shards =
      earlier_shard_files(index.string(), (fs::path(out) / "model.safetensors").string());
  fs::remove(index);
  for (const std::string& shard : shards) fs::remove(fs::path(out) / fs::path(shard).filename());
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
  prepare_output_file("flag --out", (std::filesystem::path(flags.get("out")) / "model.safetensors").string());
  VisionTransformer model(config, seed);
  save_vit(model, flags.get("out"));
  remove_earlier_sharded_checkpoint(flags.get("out"));
  fmt::print("wrote {} ({} parameters) to {}\n", flags.get("preset"), model.num_parameters(), flags.get("out"));
  return 0;
}

int main(int argc, char** argv) { return run_tool("vit_init", vit_init_main, argc, argv); }

// ./vit_forward CHECKPOINT INPUT.safetensors OUTPUT.safetensors [--device auto|cpu|cuda] [--config FILE]
// Reads `input` [B,3,H,W] (already normalised) and writes float32 `logits`,
// `blocks.{i}.out` and `blocks.{i}.attn_probs`; an A-ViT checkpoint runs with
// halting and adds `blocks.{i}.active` (models/avit.h, traced_forward).
#include "engine/cli.h"
#include "models/avit.h"
#include "models/vit_checkpoint.h"

using namespace engine;

namespace {

// The file's `input`: normalised float pixels, at least one image of the
// model's size. A bad one is an error naming the file.
Tensor read_input(const std::string& path, const VitConfig& config) {
  SafetensorsFile file = SafetensorsFile::open(path);
  check(file.contains("input"), "{}: no tensor named 'input'", path);
  Tensor input = file.get("input");
  // Integers would be raw pixels, not the normalised floats the model takes.
  check(is_floating(input.dtype()), "{}: 'input' is {}; expected normalised floating-point pixels", path,
        dtype_name(input.dtype()));
  check(config.takes_images(input.shape()) && input.size(0) >= 1,
        "{}: 'input' is {}; the model takes [B, {}, {}, {}] with B >= 1", path, ShapeText{input.shape()},
        config.in_chans, config.img_size, config.img_size);
  return input.to(DType::F32);
}

}  // namespace

static int vit_forward_main(int argc, char** argv) {
  Flags flags("vit_forward CHECKPOINT INPUT.safetensors OUTPUT.safetensors [flags]",
              {{"device", "cpu, cuda or auto", "auto"},
               {"config", "architecture config.json (default: beside the checkpoint)", ""}},
              {"CHECKPOINT", "INPUT", "OUTPUT"});
  if (!flags.parse(argc, argv)) return 0;
  check(flags.positional().size() == 3, "expected CHECKPOINT INPUT OUTPUT (see --help)");
  const std::string& checkpoint = flags.positional()[0];
  const std::string& input_path = flags.positional()[1];
  const std::string& output_path = flags.positional()[2];
  const Device device = Device::parse(flags.get("device"));
  prepare_output_file("OUTPUT", output_path);  // before the forward pass, not after it

  VitLoadOptions options;
  options.config_path = flags.get("config");
  auto model = load_vit(checkpoint, options);
  model->to(device);

  const Tensor input = read_input(input_path, model->config).to(device);
  save_safetensors(output_path, traced_forward(*model, input));
  return 0;
}

int main(int argc, char** argv) { return run_tool("vit_forward", vit_forward_main, argc, argv); }

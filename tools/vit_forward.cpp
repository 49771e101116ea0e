// ./vit_forward CHECKPOINT INPUT.safetensors OUTPUT.safetensors [--device auto|cpu|cuda] [--config FILE]
// Reads `input` [B,3,H,W] (already normalised) and writes float32 `logits`,
// `blocks.{i}.out` and `blocks.{i}.attn_probs`; an A-ViT checkpoint runs with
// halting and adds `blocks.{i}.active` (models/avit.h, traced_forward).
#include "engine/cli.h"
#include "models/avit.h"
#include "models/vit_checkpoint.h"

using namespace engine;

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

  SafetensorsFile input_file = SafetensorsFile::open(input_path);
  check(input_file.contains("input"), "{}: no tensor named 'input'", input_path);
  Tensor input = input_file.get("input");
  // Integers would be raw pixels, not the normalised floats the model takes.
  check(is_floating(input.dtype()), "{}: 'input' is {}; expected normalised floating-point pixels", input_path,
        dtype_name(input.dtype()));
  input = input.to(DType::F32).to(device);

  save_safetensors(output_path, traced_forward(*model, input));
  return 0;
}

int main(int argc, char** argv) { return run_tool("vit_forward", vit_forward_main, argc, argv); }

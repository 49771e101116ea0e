"""PyTorch/timm reference for ./eval_imagenet on the CIFAR-10 test JPEGs.

Builds timm's VisionTransformer from the checkpoint's config.json, loads the
sharded safetensors, preprocesses with PIL + torchvision exactly as the
pretrained_cfg says, and evaluates in float32 on the CPU (exact fp32), on the
GPU with TF32 off, and on the GPU with PyTorch's defaults (TF32 convolutions).
Writes per-image predictions so they can be compared with the engine's
--predictions file line by line.

usage: python3 bench/torch_eval_cifar10.py MODEL_DIR TEST_DIR OUT_DIR
"""
import json
import os
import sys

import torch
import timm
from PIL import Image
from safetensors.torch import load_file
from torchvision import transforms


def load_model(model_dir):
    config = json.load(open(os.path.join(model_dir, "config.json")))
    model = timm.models.vision_transformer.VisionTransformer(**config["model_args"])
    index = json.load(open(os.path.join(model_dir, "model.safetensors.index.json")))
    state = {}
    for shard in sorted(set(index["weight_map"].values())):
        state.update(load_file(os.path.join(model_dir, shard)))
    model.load_state_dict(state)
    return model.eval(), config["pretrained_cfg"]


def load_images(test_dir, cfg):
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize(cfg["mean"], cfg["std"])])
    names, images, labels = [], [], []
    for label, cls in enumerate(sorted(os.listdir(test_dir))):
        for file in sorted(os.listdir(os.path.join(test_dir, cls))):
            names.append(f"{cls}/{file}")
            images.append(to_tensor(Image.open(os.path.join(test_dir, cls, file)).convert("RGB")))
            labels.append(label)
    return names, torch.stack(images), torch.tensor(labels)


def predict(model, images, device):
    model = model.to(device)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 500):
            out.append(model(images[start:start + 500].to(device)).argmax(1).cpu())
    return torch.cat(out)


def main():
    model_dir, test_dir, out_dir = sys.argv[1:4]
    model, cfg = load_model(model_dir)
    names, images, labels = load_images(test_dir, cfg)
    runs = {"cpu_fp32": ("cpu", False)}
    if torch.cuda.is_available():
        runs.update({"cuda_fp32_no_tf32": ("cuda", False), "cuda_default_tf32_conv": ("cuda", True)})
    results = {}
    for name, (device, tf32) in runs.items():
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        predicted = predict(model, images, device)
        results[name] = (predicted == labels).float().mean().item()
        with open(os.path.join(out_dir, f"predictions_{name}.txt"), "w") as f:
            f.writelines(f"{n} {p}\n" for n, p in zip(names, predicted.tolist()))
        print(f"{name}: top-1 {100 * results[name]:.2f}%")
    json.dump(results, open(os.path.join(out_dir, "torch_eval.json"), "w"), indent=1)


if __name__ == "__main__":
    main()

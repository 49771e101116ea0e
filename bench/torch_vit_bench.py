#!/usr/bin/env python3
"""PyTorch + timm anchors for ./bench_vit, run on the same card in the same call.

Times ViT-S/16 and ViT-B/16 at 224 px (random images, batch 256): inference
(forward under torch.inference_mode) and a training step (forward,
cross-entropy, backward, AdamW), in float32 and under bf16 autocast, eager and
(optionally) torch.compile'd. Median over 3 rounds of `steps` calls after
warm-up, timed with CUDA events like the engine. Prints a table and writes JSON.

usage: python3 bench/torch_vit_bench.py --out torch_vit.json [--compile vit_small_patch16_224]
"""
import argparse
import json

import timm
import torch


def median_ms(run, steps, rounds=3, warmup=3):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(rounds):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            run()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / steps)
    return sorted(times)[len(times) // 2]


def time_model(name, batch, steps, precision, compiled):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).cuda()
    images = torch.randn(batch, 3, 224, 224, device="cuda")
    labels = torch.arange(batch, device="cuda") % 1000
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")
    net = torch.compile(model) if compiled else model

    model.eval()

    def infer():
        with torch.inference_mode(), autocast:
            net(images)

    infer_ms = median_ms(infer, steps)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)

    def train():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.cross_entropy(net(images), labels)
        loss.backward()
        optimizer.step()

    train_ms = median_ms(train, steps)
    return {"model": name, "precision": precision, "compiled": compiled,
            "infer_img_s": batch / infer_ms * 1e3, "train_img_s": batch / train_ms * 1e3}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="vit_small_patch16_224,vit_base_patch16_224")
    parser.add_argument("--compile", default="", help="comma-separated models to also time compiled (bf16)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default="torch_vit.json")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32, as in the engine
    torch.backends.cudnn.allow_tf32 = False
    runs = []
    for name in args.models.split(","):
        for precision in ("fp32", "bf16"):
            runs.append(time_model(name, args.batch, args.steps, precision, compiled=False))
        if name in args.compile.split(","):
            runs.append(time_model(name, args.batch, args.steps, "bf16", compiled=True))
    print(f"{'model':<26} {'precision':<9} {'compiled':<9} {'infer img/s':>12} {'train img/s':>12}")
    for r in runs:
        print(f"{r['model']:<26} {r['precision']:<9} {str(r['compiled']):<9} "
              f"{r['infer_img_s']:>12.0f} {r['train_img_s']:>12.0f}")
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "batch": args.batch, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()

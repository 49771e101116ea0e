#!/usr/bin/env python3
"""PyTorch + timm latency anchor for `./eval_imagenet --latency`, on the same card in the same call.

Builds timm's VisionTransformer from a checkpoint folder's config.json with
bench/torch_eval_cifar10.py's load_model, and times the float32
inference forward at each batch size the way the engine's latencies_ms does:
each call between two device synchronisations, wall clock, one untimed round,
then the median of `repeats` calls. Also times the forward captured once as a
CUDA graph and replayed (the GPU's time without the host's cost per op), as
the engine's graph_latency_ms. TF32 is off: float32 means float32, as in the engine.

usage: python3 bench/torch_latency.py MODEL_DIR --batches 1,8,32,64,256 --repeats 40 --out torch_latency.json
"""
import argparse
import json
import statistics
import time

import timm
import torch

from torch_eval_cifar10 import load_model  # the checkpoint folder as timm's VisionTransformer


def median_wall_ms(run, repeats):
    run()  # untimed: allocator, kernels' first launches
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def graph_of(model, images):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as PyTorch asks
        for _ in range(3):
            model(images)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model(images)
    return graph


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--batches", default="1,256")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--out", default="torch_latency.json")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model, _ = load_model(args.model_dir)
    model = model.cuda()
    size = model.patch_embed.img_size[0]
    rows = []
    with torch.inference_mode():
        for batch in [int(b) for b in args.batches.split(",")]:
            images = torch.randn(batch, 3, size, size, device="cuda")
            eager = median_wall_ms(lambda: model(images), args.repeats)
            graph = graph_of(model, images)
            replayed = median_wall_ms(graph.replay, args.repeats)
            rows.append({"batch": batch, "latency_ms": eager, "graph_latency_ms": replayed})
            print(f"batch {batch:>4}: eager {eager:.3f} ms, graph {replayed:.3f} ms")
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "timm": timm.__version__,
                   "model": args.model_dir, "repeats": args.repeats, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

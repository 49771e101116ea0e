#!/usr/bin/env python3
"""Writes tests/data/pil_reference/: what PIL (as used by timm / torchvision) produces, for
tests/test_data_pil.cpp to compare the C++ decode and transforms against.

  pip install pillow numpy
  python3 tools/make_transform_reference.py [--shared ../shared] [--out tests/data/pil_reference]

Contents (reference.json + small lossless PNGs):
- synthetic: a noisy test pattern (the same formula is in the C++ test, so no decoding is
  involved) resized to several sizes with BILINEAR and BICUBIC: checks resize alone.
- cifar: PIL's RGB decode of the first few CIFAR-10 test JPEGs (32x32, stored whole).
- cmyk: an Adobe CMYK JPEG as PIL writes it (random inks, stored inverted) and PIL's RGB
  decoding of it (its own conversion, with its rounding).
- imagenet: for a few imagenet-sample images, 16x16 patches of PIL's RGB decode, and of the
  timm eval pipeline (shorter side to 256 bicubic / 248 bilinear, center crop 224) with the
  per-channel mean of the whole crop. Patches of one result are stacked vertically in one PNG.
"""
import argparse
import io
import json
import math
import os
import tarfile

import numpy as np
import PIL
from PIL import Image

PATCH = 16
SYNTHETIC_SHAPE = (47, 63)  # height, width
SYNTHETIC_SIZES = [(29, 38), (70, 95), (47, 30), (15, 63), (100, 24)]
CIFAR_FILES = [f"cifar10/test/airplane/{i:04d}.jpg" for i in range(4)]
IMAGENET_FILES = [
    "imagenet-sample/val/n01440764/n01440764_tench.JPEG",  # 500x375 landscape
    "imagenet-sample/val/n02093428/n02093428_American_Staffordshire_terrier.JPEG",  # portrait
    "imagenet-sample/val/n02977058/n02977058_cash_machine.JPEG",  # 909x768, large
    "imagenet-sample/val/n07716906/n07716906_spaghetti_squash.JPEG",  # 168x168, upscaled
]
# (interpolation, crop_pct): timm's eval transform at img_size 224.
PIPELINES = [("bicubic", 0.875), ("bilinear", 0.9)]
IMG_SIZE = 224
FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def synthetic_pattern(height, width):
    """Gradients plus hash noise; must match synthetic_pattern() in tests/test_data_pil.cpp."""
    y, x, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(3), indexing="ij")
    y, x, c = (a.astype(np.uint64) for a in (y, x, c))
    h = ((x * 73856093) ^ (y * 19349663) ^ (c * 83492791)) & 0xFFFFFFFF
    return ((2 * x + 3 * y + 60 * c + h % 64) % 256).astype(np.uint8)


def resize_shorter(img, size, resample):
    """torchvision Resize(int) on a PIL image."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), resample)


def center_crop(img, size):
    """torchvision CenterCrop on a PIL image (crop not larger than the image)."""
    w, h = img.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def patch_positions(height, width):
    """Corners, centre and two off-centre spots of a height x width image (top-left of each patch)."""
    ys = [0, (height - PATCH) // 2, height - PATCH]
    xs = [0, (width - PATCH) // 2, width - PATCH]
    return [[ys[0], xs[0]], [ys[0], xs[2]], [ys[1], xs[1]], [ys[2], xs[0]], [ys[2], xs[2]],
            [height // 3, width // 5], [2 * height // 3, 3 * width // 4]]


def save_patches(array, positions, path):
    stacked = np.concatenate([array[y:y + PATCH, x:x + PATCH] for y, x in positions], axis=0)
    Image.fromarray(stacked).save(path, optimize=True)


def save_png(array, path):
    Image.fromarray(array).save(path, optimize=True)


def read_member(archive, name):
    with tarfile.open(archive) as tar:
        return tar.extractfile(name).read()


def synthetic_cases(out_dir):
    source = Image.fromarray(synthetic_pattern(*SYNTHETIC_SHAPE))
    cases = []
    for interp, resample in FILTERS.items():
        for height, width in SYNTHETIC_SIZES:
            png = f"synthetic_{interp}_{height}x{width}.png"
            save_png(np.asarray(source.resize((width, height), resample)), os.path.join(out_dir, png))
            cases.append({"interp": interp, "height": height, "width": width, "png": png})
    return {"height": SYNTHETIC_SHAPE[0], "width": SYNTHETIC_SHAPE[1], "cases": cases}


def cifar_cases(archive, out_dir):
    cases = []
    with tarfile.open(archive, "r:xz") as tar:
        for name in CIFAR_FILES:
            decoded = np.asarray(Image.open(io.BytesIO(tar.extractfile(name).read())).convert("RGB"))
            png = "cifar_" + name.split("/", 1)[1].replace("/", "_").replace(".jpg", ".png")
            save_png(decoded, os.path.join(out_dir, png))
            cases.append({"file": name, "png": png})
    return cases


def cmyk_case(out_dir):
    rng = np.random.default_rng(7)
    inks = rng.integers(0, 256, size=(40, 48, 4), dtype=np.uint8)
    jpeg = os.path.join(out_dir, "cmyk_random.jpg")
    Image.frombytes("CMYK", (48, 40), inks.tobytes()).save(jpeg, quality=95)
    save_png(np.asarray(Image.open(jpeg).convert("RGB")), os.path.join(out_dir, "cmyk_random_decoded.png"))
    return {"jpeg": "cmyk_random.jpg", "png": "cmyk_random_decoded.png"}


def imagenet_case(archive, name, out_dir):
    img = Image.open(io.BytesIO(read_member(archive, name))).convert("RGB")
    decoded = np.asarray(img)
    stem = os.path.splitext(os.path.basename(name))[0]
    positions = patch_positions(*decoded.shape[:2])
    save_patches(decoded, positions, os.path.join(out_dir, f"{stem}_decoded.png"))
    case = {"file": name, "height": decoded.shape[0], "width": decoded.shape[1],
            "decoded": {"png": f"{stem}_decoded.png", "positions": positions}, "pipelines": []}
    for interp, crop_pct in PIPELINES:
        resized = resize_shorter(img, math.floor(IMG_SIZE / crop_pct), FILTERS[interp])
        cropped = np.asarray(center_crop(resized, IMG_SIZE))
        positions = patch_positions(IMG_SIZE, IMG_SIZE)
        png = f"{stem}_{interp}.png"
        save_patches(cropped, positions, os.path.join(out_dir, png))
        case["pipelines"].append({
            "interp": interp, "crop_pct": crop_pct, "img_size": IMG_SIZE,
            "resized_height": resized.size[1], "resized_width": resized.size[0],
            "mean": cropped.reshape(-1, 3).mean(axis=0).tolist(), "png": png, "positions": positions})
    return case


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", default="../shared", help="the shared/ folder (holds data/)")
    parser.add_argument("--out", default="tests/data/pil_reference")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    data_dir = os.path.join(args.shared, "data")
    imagenet_tar = os.path.join(data_dir, "imagenet-sample.tar")
    reference = {
        "pillow_version": PIL.__version__,
        "patch": PATCH,
        "synthetic": synthetic_cases(args.out),
        "cifar": cifar_cases(os.path.join(data_dir, "cifar10-jpeg.tar.xz"), args.out),
        "cmyk": cmyk_case(args.out),
        "imagenet": [imagenet_case(imagenet_tar, name, args.out) for name in IMAGENET_FILES],
    }
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)


if __name__ == "__main__":
    main()

// Image transforms matching what timm / torchvision do on PIL images, so that a model
// trained in PyTorch sees the same pixels here.
#pragma once
#include <random>
#include <utility>

#include "data/image.h"

namespace data {

enum class Interp { Bilinear, Bicubic };

// PIL's Image.resize(size, BILINEAR|BICUBIC): separable convolution, horizontal pass then
// vertical, the filter widened by the shrink factor (antialiasing), an 8-bit intermediate.
// Works for any channel count. Resizing to the same size returns a copy.
Image resize(const Image& image, int out_height, int out_width, Interp interp);

// torchvision Resize(size) with an int: the shorter side becomes `size`, the longer
// int(size * long / short).
Image resize_shorter(const Image& image, int size, Interp interp);

// timm's eval resize size: floor(img_size / crop_pct), e.g. 224 / 0.875 = 256.
int eval_resize_size(int img_size, double crop_pct);

// timm's eval transform before ToTensor: resize_shorter(eval_resize_size(..)), then
// center_crop(img_size, img_size).
Image resize_and_center_crop(const Image& image, int img_size, double crop_pct, Interp interp);

// The rectangle [top, top + height) x [left, left + width); it must lie inside the image.
Image crop(const Image& image, int top, int left, int height, int width);

// torchvision CenterCrop: top = round((H - h) / 2) with Python's round-half-to-even, same
// for left. The crop must not be larger than the image.
Image center_crop(const Image& image, int height, int width);

Image hflip(const Image& image);

// torchvision RandomCrop(size, padding=pad, padding_mode="reflect"): a size x size window
// at a uniform position in the image reflect-padded by `pad` (mirror without repeating the
// edge pixel, pad < image side).
Image random_crop_reflect_pad(const Image& image, int size, int pad, std::mt19937_64& rng);

// torchvision RandomResizedCrop(size, scale, ratio, interp): up to 10 tries of a random
// area fraction in `scale` and log-uniform aspect ratio in `ratio`; if none fits, a
// centred crop with the aspect ratio clamped into `ratio`. The crop is resized to size x size.
Image random_resized_crop(const Image& image, int size, std::mt19937_64& rng,
                          Interp interp = Interp::Bilinear,
                          std::pair<double, double> scale = {0.08, 1.0},
                          std::pair<double, double> ratio = {3.0 / 4.0, 4.0 / 3.0});

// ToTensor + Normalize: out[c][y][x] = (pixel / 255 - mean[c]) / std[c], in float32 as
// PyTorch computes it. mean and std have image.channels entries; `out` has room for
// channels * height * width floats.
void to_normalized_chw(const Image& image, const float* mean, const float* std, float* out);

}  // namespace data
